"""Workers sharing a run directory for readiness (proxy/ops/run_dir.py, proxy/ops/status.py), in
one process: each ``ProxyStatus`` plays one worker (its pid set by hand), the test plays the
supervisor. Metrics across real worker processes: tests/unit/test_metrics.py."""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path
from typing import Any

from proxy.ops.metrics import Metrics
from proxy.ops.run_dir import RunDir
from proxy.ops.status import STALE_S, ProxyStatus


def _total(text: str, name: str = "proxy_requests_total") -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


class W:
    """One pretend worker: its metrics, its reasons, its status."""

    def __init__(self, run_dir: RunDir | None, pid: int, reasons: list[str] | None = None) -> None:
        self.metrics = Metrics()
        self.reasons = reasons or []
        self.status = ProxyStatus(self.metrics, lambda: list(self.reasons), lambda: {"policy_version": "v1"},
                                  run_dir)
        self.status.pid = pid

    def requests(self, n: int) -> None:
        for _ in range(n):
            self.metrics.inc("proxy_requests_total", (("client", "bot"),))
        self.metrics.set("proxy_vault_up", (), 1)
        self.metrics.set("proxy_exchange_clock_offset_ms", (("account", "a"),), float(self.status.pid))


def _dir(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir(mode=0o700)
    return run


def test_created_run_directory_is_private_and_removed(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    run = RunDir.create()
    assert run.path.parent == tmp_path and stat.S_IMODE(run.path.stat().st_mode) == 0o700
    run.write_live([1])
    run.remove()
    assert not run.path.exists()


def test_without_a_run_directory_the_worker_answers_alone(tmp_path: Path) -> None:
    a = W(None, 101, reasons=["starting"])
    a.requests(2)
    a.status.publish()
    assert _total(a.status.metrics_text()) == 2
    assert a.status.readyz() == (503, {"ready": False, "reasons": ["starting"], "policy_version": "v1"})
    a.reasons.clear()
    assert a.status.readyz() == (200, {"ready": True, "policy_version": "v1"})


def test_readyz_needs_every_live_worker_ready_and_fresh(tmp_path: Path) -> None:
    run = _dir(tmp_path)
    a, b = W(run, 101), W(run, 102, reasons=["vault: connection refused"])
    run.write_live([101, 102, 103])
    b.status.publish()
    code, body = a.status.readyz()
    assert code == 503
    assert body["reasons"] == ["worker 102: vault: connection refused",
                               "worker 103: starting (no status reported yet)"]
    b.reasons.clear()
    b.status.publish()
    W(run, 103).status.publish()
    code, body = a.status.readyz()
    workers = body["workers"]
    assert isinstance(workers, list)
    assert code == 200 and body["ready"] is True and [w["pid"] for w in workers] == ["101", "102", "103"]
    # b stops publishing: after STALE_S it counts as not ready, named by pid
    doc = run.read_workers()[102]
    doc["mono"] = time.monotonic() - STALE_S - 3
    run.write_worker(102, doc)
    code, body = a.status.readyz()
    reasons = body["reasons"]
    assert isinstance(reasons, list)
    assert code == 503 and reasons[0].startswith("worker 102: no status for")
    # once the supervisor has reaped it, it is not waited for
    run.retire(102)
    run.write_live([101, 103])
    assert a.status.readyz()[0] == 200


def test_unwritable_run_directory_is_logged_once_and_survived(tmp_path: Path, caplog: Any) -> None:
    run = RunDir(tmp_path / "missing")
    a = W(run, 101)
    a.requests(1)
    for _ in range(3):
        a.status.publish()
    assert len([r for r in caplog.records if "cannot publish" in r.getMessage()]) == 1
    assert _total(a.status.metrics_text()) == 1
