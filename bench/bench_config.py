"""What the declarative configuration schema costs: pydantic (as shipped) against msgspec.

Each start-up figure is the median of N fresh interpreters that import the schema and load
``deploy/systemd/config.toml`` once, against a baseline that imports what ``proxy.config``
needs besides the schema library. msgspec is measured on the same shape (types and defaults,
without our messages or checks) when it is installed (``pip install msgspec``); it is not a
dependency. Then the cost of one more load, and of loading ``policies/``, in a running process.

    python bench/bench_config.py [N]
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "deploy" / "systemd" / "config.toml"
BASE = "import tomllib, proxy.errors, proxy.exchanges, proxy.keys.transit.signer"

MSGSPEC_SHAPE = '''
from typing import Literal
import msgspec
class T(msgspec.Struct, forbid_unknown_fields=True, frozen=True): pass
class Server(T):
    listen: str = "127.0.0.1:8700"; admin_listen: str = "127.0.0.1:8701"; max_body_bytes: int = 65536
    upstream_timeout_s: float = 10.0; allow_non_loopback: bool = False
class Vault(T):
    addr: str = "http://127.0.0.1:8200"; auth: Literal["token", "approle"] = "token"; mount: str = "secret"
    token_file: str | None = None; role_id_file: str | None = None; secret_id_file: str | None = None
    proxy_path: str = "proxy"; timeout_s: float = 5.0; ca_file: str | None = None
    grace_period_s: float = 300.0; transit_mount: str = "transit"
class State(T):
    backend: Literal["sqlite", "redis"] = "sqlite"; path: str = "state.db"; url: str | None = None
    idempotency_ttl_s: int = 86400; synchronous: Literal["full", "normal"] = "full"
class Dir(T):
    dir: str | None = None
class Tokens(T):
    issuer: str = "signing-proxy"; audience: str = "signing-proxy"; default_ttl_s: int = 2592000
    max_ttl_s: int = 31622400
class Keys(T):
    rotation_warn_days: int = 90
class Account(T):
    name: str; exchange: str; environment: Literal["live", "testnet"] = "live"; secret: str = ""
    secrets: tuple[str, ...] = (); base_url: str = ""; unsafe_custom_base_url: bool = False
    recv_window_ms: int | None = None; nonce_unit: Literal["ms", "us"] | None = None
    weight_per_minute: int | None = None; unsafe_allow_withdraw_capable_key: bool = False
    signing: Literal["local", "transit"] = "local"; transit_key: str | None = None
    exchange_clock: bool = True
class Config(T):
    server: Server = Server(); vault: Vault = Vault(); state: State = State(); audit: Dir = Dir()
    policies: Dir = Dir(); tokens: Tokens = Tokens(); keys: Keys = Keys(); accounts: tuple[Account, ...] = ()
'''


def start_ms(code: str) -> float:
    timed = f"import time\nt = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", timed],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return float(out.stdout.strip().splitlines()[-1]) * 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    cases = {
        "baseline (no schema library)": BASE,
        "pydantic: import proxy.config, load": f"{BASE}\nfrom proxy.config import load; load({str(FILE)!r})",
    }
    if importlib.util.find_spec("msgspec") is not None:
        shape = Path(tempfile.mkdtemp()) / "msgspec_shape.py"
        shape.write_text(MSGSPEC_SHAPE)
        cases["msgspec: same shape, no messages"] = (
            f"{BASE}\nimport sys; sys.path.insert(0, {str(shape.parent)!r}); import msgspec, msgspec_shape\n"
            f"msgspec.convert(tomllib.load(open({str(FILE)!r}, 'rb')), msgspec_shape.Config)")
    for name, code in cases.items():
        runs = sorted(start_ms(code) for _ in range(n))
        print(f"{name:40s} start-up median {statistics.median(runs):6.1f} ms  "
              f"(lower quartile {runs[len(runs) // 4]:.1f} ms)")

    from proxy.config import load
    from proxy.policy.loader import load_dir

    load(FILE)
    t = time.perf_counter()
    for _ in range(200):
        load(FILE)
    print(f"{'pydantic: one more config load':40s} {(time.perf_counter() - t) / 200 * 1000:6.3f} ms")
    accounts = {"binance-main", "binance-hedge", "okx-main"}
    load_dir(ROOT / "policies", accounts)
    t = time.perf_counter()
    for _ in range(50):
        load_dir(ROOT / "policies", accounts)
    print(f"{'pydantic: load policies/ (4 files)':40s} {(time.perf_counter() - t) / 50 * 1000:6.3f} ms")


if __name__ == "__main__":
    main()
