"""The private directory one ``serve --workers N`` shares between its workers and supervisor.

Created by the supervisor (``mkdtemp``: mode 0700, under ``$TMPDIR`` or /tmp; private /tmp
under systemd, a tmpfs in the container) and removed when it exits. Every file is replaced
whole (write a temporary file, then ``rename``), so a reader sees an old or a new version,
never half of one:

- ``worker-<pid>.json``: a worker's status, about every second: its readiness reasons and
  details (proxy/ops/status.py);
- ``live.json``: the pids the supervisor is running now (written at each spawn and exit);
- ``metrics/``: prometheus_client's multiprocess files, one set per worker, written by the
  workers as each value changes (proxy/ops/metrics.py). When a worker exits the supervisor
  deletes its status file and its gauge files; its counter and histogram files stay, so the
  sums never go down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from proxy.ops.metrics import process_exited

_LIVE = "live.json"


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.metrics = path / "metrics"

    @classmethod
    def create(cls) -> RunDir:
        path = Path(tempfile.mkdtemp(prefix="signing-proxy-run-"))
        path.chmod(0o700)
        return cls(path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # -- workers ---------------------------------------------------------------------------

    def write_worker(self, pid: int, doc: Mapping[str, Any]) -> None:
        self._write(f"worker-{pid}.json", doc)

    def read_workers(self) -> dict[int, dict[str, Any]]:
        """Every worker file that can be read now (one deleted meanwhile is skipped)."""
        found: dict[int, dict[str, Any]] = {}
        for path in self.path.glob("worker-*.json"):
            pid = path.stem.removeprefix("worker-")
            doc = self._read(path.name)
            if pid.isdigit() and isinstance(doc, dict):
                found[int(pid)] = doc
        return found

    # -- supervisor ------------------------------------------------------------------------

    def write_live(self, pids: Iterable[int]) -> None:
        self._write(_LIVE, {"pids": sorted(pids)})

    def read_live(self) -> set[int] | None:
        """The supervisor's running pids; None before it has written them."""
        doc = self._read(_LIVE)
        if not isinstance(doc, dict) or not isinstance(doc.get("pids"), list):
            return None
        return {int(p) for p in doc["pids"] if isinstance(p, int)}

    def retire(self, pid: int) -> None:
        """An exited worker: its status file goes, and its gauges (its counters stay counted)."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / f"worker-{pid}.json").unlink()
        if self.metrics.is_dir():
            process_exited(pid, self.metrics)

    # -- files -----------------------------------------------------------------------------

    def _write(self, name: str, doc: Mapping[str, Any]) -> None:
        tmp = self.path / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(doc, default=str, separators=(",", ":")))
        os.replace(tmp, self.path / name)

    def _read(self, name: str) -> object:
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, ValueError):
            return None
