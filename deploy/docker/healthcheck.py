"""Container health check: exit 0 when the proxy's admin listener answers GET /healthz with 200.

Runs inside the container (Docker HEALTHCHECK, Kubernetes exec probes), so the admin listener
can stay on loopback. ``/readyz`` instead with ``--ready``. Standard library only; the URL can
be changed with SIGNING_PROXY_ADMIN (default ``http://127.0.0.1:8701``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    base = os.environ.get("SIGNING_PROXY_ADMIN", "http://127.0.0.1:8701").rstrip("/")
    if not base.startswith(("http://", "https://")):
        sys.stderr.write(f"healthcheck: SIGNING_PROXY_ADMIN={base!r} is not an http(s) URL\n")
        return 2
    path = "/readyz" if "--ready" in argv else "/healthz"
    try:
        with urllib.request.urlopen(base + path, timeout=2) as response:  # noqa: S310
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"healthcheck: {base}{path}: {exc}\n")
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
