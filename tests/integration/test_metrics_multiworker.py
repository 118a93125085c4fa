"""One view of the whole proxy on the admin address: ``serve --workers 3``, requests spread
over the workers, then /metrics scraped again and again (each scrape a new connection, so any
worker may answer) always shows every request, never fewer than before, also across a
``kill -9`` of a worker and its replacement; /readyz is 200 only with every worker ready."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.stack import AccountSpec, Stack, start_stack

ACCOUNT = AccountSpec("binance-main", "binance", {"api_key": "metricsKey0123456789", "api_secret": "m" * 64})
POLICY = """
version = 1
client = "bot"

[[grants]]
account = "binance-main"
allow = ["read"]
"""
FIRST, SECOND = 30, 12


def _children(pid: int) -> set[int]:
    """Worker pids: processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _scrape(stack: Stack) -> tuple[float, float]:
    """(requests, latency observations) summed over every series of one /metrics answer."""
    text = httpx.get(stack.admin_url + "/metrics", timeout=10, headers={"Connection": "close"}).text
    requests = sum(float(v) for v in re.findall(r"^proxy_requests_total\{[^}]*\} (\S+)$", text, re.M))
    observed = sum(float(v) for v in re.findall(r"^proxy_request_duration_seconds_count\{[^}]*\} (\S+)$",
                                                text, re.M))
    assert 'worker="' not in "".join(re.findall(r"^proxy_requests_total.*$", text, re.M))
    return requests, observed


def _send(stack: Stack, n: int) -> set[int]:
    """``n`` reads, each on a new connection; the pids of the workers that answered (from the log)."""
    headers = {"Proxy-Authorization": f"Bearer {stack.token('bot')}"}
    ids = set()
    for _ in range(n):
        r = httpx.get(stack.proxy_url + "/x/binance-main/api/v3/account", headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        ids.add(r.headers["x-proxy-request-id"])
    pids = set()
    for line in stack.proxy_log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("request_id") in ids:
            pids.add(entry["pid"])
    return pids


def _wait(check: object, timeout_s: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s}s: {what}\n{stack.proxy_log()[-3000:]}")


class Watcher(threading.Thread):
    """Scrapes /metrics as fast as it can, keeping every answer."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.seen, self.errors = stack, list[tuple[float, float]](), list[str]()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.seen.append(_scrape(self.stack))
            except httpx.HTTPError as exc:  # a connection the killed worker had accepted
                self.errors.append(repr(exc))
            time.sleep(0.02)


def _never_down(seen: list[tuple[float, float]]) -> None:
    for before, after in itertools.pairwise(seen):
        assert after[0] >= before[0] and after[1] >= before[1], seen


def test_metrics_and_readiness_of_three_workers_survive_kill_9(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_parent = tmp_path / "tmp"
    run_parent.mkdir()
    monkeypatch.setenv("TMPDIR", str(run_parent))  # where the supervisor makes its run directory
    with start_stack(tmp_path, [ACCOUNT], {"bot": POLICY}, workers=3) as stack:
        supervisor = stack.procs[0].pid
        _wait(lambda: len(_children(supervisor)) == 3, 30, "three workers", stack)
        [run] = list(run_parent.iterdir())
        assert run.name.startswith("signing-proxy-run-") and stat.S_IMODE(run.stat().st_mode) == 0o700

        # /readyz: all three workers, each ready
        _wait(lambda: stack.readyz()[0] == 200 and len(stack.readyz()[1].get("workers", [])) == 3, 30,
              "three ready workers", stack)
        code, body = stack.readyz()
        assert code == 200 and body["ready"] is True and "reasons" not in body
        assert {int(w["pid"]) for w in body["workers"]} == _children(supervisor)
        assert all(w["ready"] for w in body["workers"])
        assert "exchange_clock" in body and "policy_version" in body  # the details are kept

        watcher = Watcher(stack)
        watcher.start()
        try:
            assert len(_send(stack, FIRST)) >= 2, "the requests were spread over several workers"
            _wait(lambda: _scrape(stack) == (FIRST, FIRST), 20, f"{FIRST} requests on /metrics", stack)
            # stable: whichever worker answers, every request and no more
            assert {_scrape(stack) for _ in range(20)} == {(FIRST, FIRST)}

            victim = min(_children(supervisor))
            os.kill(victim, signal.SIGKILL)
            _wait(lambda: victim not in _children(supervisor) and len(_children(supervisor)) == 3, 30,
                  "a replacement worker", stack)
            new = _children(supervisor)
            # the replacement joins: /readyz waits for it, then lists it ready
            _wait(lambda: stack.readyz()[0] == 200
                  and {int(w["pid"]) for w in stack.readyz()[1]["workers"]} == new, 40,
                  "ready again with the new worker", stack)
            assert {_scrape(stack) for _ in range(20)} == {(FIRST, FIRST)}, "the dead worker's counts stay"

            _send(stack, SECOND)
            total = FIRST + SECOND
            _wait(lambda: _scrape(stack) == (total, total), 20, f"{total} requests on /metrics", stack)
            assert {_scrape(stack) for _ in range(20)} == {(total, total)}
        finally:
            watcher.done.set()
            watcher.join(timeout=30)
        assert len(watcher.seen) > 20, watcher.errors
        _never_down(watcher.seen)
        assert watcher.seen[-1] == (total, total)
        assert not (run / f"worker-{victim}.json").exists()
        # the killed worker's gauges went with it; its counters and histograms stay counted
        assert not list((run / "metrics").glob(f"gauge_*_{victim}.db"))
        assert (run / "metrics" / f"counter_{victim}.db").exists()
        assert (run / "metrics" / f"histogram_{victim}.db").exists()
    # the supervisor removes its run directory when it stops
    assert list(run_parent.iterdir()) == []


def test_a_single_worker_answers_in_the_same_format(tmp_path: Path) -> None:
    with start_stack(tmp_path, [ACCOUNT], {"bot": POLICY}) as stack:
        _send(stack, 3)
        assert _scrape(stack) == (3, 3)
        code, body = stack.readyz()
        assert code == 200 and body["ready"] is True and "workers" not in body
