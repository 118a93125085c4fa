"""Metrics on prometheus_client (proxy/ops/metrics.py): the format of one worker, then real
worker processes (forked, as ``serve --workers N`` does) sharing a run directory: sums over
every worker, a ``kill -9``'d worker's counts kept, its gauges gone once retired, gauges
combined or per worker."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.ops.metrics import Metrics, render_shared, share_between_processes
from proxy.ops.run_dir import RunDir

REQ = (("client", "bot"), ("account", "main"))


def _series(text: str, name: str) -> dict[str, float]:
    """Every sample line of ``name`` (exactly) as {labels text: value}."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == name or series.startswith(name + "{"):
            found[series[len(name):]] = float(value)
    return found


def _requests(m: Metrics, n: int, ms: float = 3.0, vault_up: float = 1, key_version: float = 2,
              offset: float = 0.0) -> None:
    for _ in range(n):
        m.inc("proxy_requests_total", REQ, help="requests")
        m.observe_ms("proxy_request_duration_seconds", (("account", "main"),), ms, help="latency")
    m.set("proxy_vault_up", (), vault_up, help="vault")
    m.set("proxy_key_version", (("account", "main"),), key_version, help="key")
    m.set("proxy_key_age_seconds", (("account", "main"),), 100 * key_version, help="age")
    m.set("proxy_exchange_clock_offset_ms", (("account", "main"),), offset, help="offset")


# -- one worker ------------------------------------------------------------------------------


def test_one_worker_names_types_and_values() -> None:
    m = Metrics()
    _requests(m, 2, ms=3.0)
    m.observe_ms("proxy_request_duration_seconds", (("account", "main"),), 30.0)
    text = m.render()
    for name, kind in [("proxy_requests_total", "counter"), ("proxy_request_duration_seconds", "histogram"),
                       ("proxy_vault_up", "gauge"), ("proxy_exchange_clock_offset_ms", "gauge")]:
        assert f"# TYPE {name} {kind}" in text
    assert _series(text, "proxy_requests_total") == {'{account="main",client="bot"}': 2.0}
    buckets = _series(text, "proxy_request_duration_seconds_bucket")
    assert buckets['{account="main",le="0.002"}'] == 0
    assert buckets['{account="main",le="0.005"}'] == 2      # the two 3 ms requests
    assert buckets['{account="main",le="0.025"}'] == 2
    assert buckets['{account="main",le="0.05"}'] == 3       # and the 30 ms one
    assert buckets['{account="main",le="+Inf"}'] == 3
    assert _series(text, "proxy_request_duration_seconds_count") == {'{account="main"}': 3}
    assert _series(text, "proxy_request_duration_seconds_sum")['{account="main"}'] == pytest.approx(0.036)
    assert _series(text, "proxy_vault_up") == {"": 1.0}
    assert _series(text, "proxy_exchange_clock_offset_ms") == {f'{{account="main",worker="{os.getpid()}"}}': 0.0}
    assert "_created" not in text
    assert 'proxy_requests_total{account="main",client="bot"} 2.0' in text   # as several workers show it


def test_instances_are_independent_and_empty_renders_nothing() -> None:
    a, b = Metrics(), Metrics()
    a.inc("proxy_requests_total", REQ)
    assert b.render() == ""
    assert _series(a.render(), "proxy_requests_total") == {'{account="main",client="bot"}': 1.0}


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.inc("proxy_requests_total", (("client", 'a"b\\c\nd'),))
    assert 'proxy_requests_total{client="a\\"b\\\\c\\nd"} 1.0' in m.render()


def test_a_name_is_one_kind_and_counters_end_in_total() -> None:
    m = Metrics()
    m.inc("proxy_requests_total", REQ)
    with pytest.raises(ValueError, match="is a Counter, not a Gauge"):
        m.set("proxy_requests_total", REQ, 1)
    with pytest.raises(ValueError, match="must end in _total"):
        m.inc("proxy_requests")


# -- real worker processes -------------------------------------------------------------------


class Worker:
    """A forked process that records metrics into the shared directory, then answers scrapes
    (``Metrics.render`` in that process) until stopped or killed."""

    def __init__(self, run: RunDir, work: Callable[[Metrics], None]) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.close(self._to_child)
                os.close(self._from_child)
                share_between_processes(run.metrics)
                metrics = Metrics()
                work(metrics)
                os.write(from_child_w, b"ready")
                while os.read(to_child_r, 1) == b"s":
                    text = metrics.render().encode()
                    os.write(from_child_w, len(text).to_bytes(4, "big") + text)
                code = 0
            finally:
                os._exit(code)
        os.close(to_child_r)
        os.close(from_child_w)
        self.pid = pid
        assert self._read(5) == b"ready"

    def _read(self, n: int) -> bytes:
        got = b""
        while len(got) < n:
            chunk = os.read(self._from_child, n - len(got))
            assert chunk, "the worker process died"
            got += chunk
        return got

    def scrape(self) -> str:
        os.write(self._to_child, b"s")
        return self._read(int.from_bytes(self._read(4), "big")).decode()

    def stop(self) -> None:
        os.write(self._to_child, b"q")  # not EOF: later forks hold copies of this pipe's ends
        os.close(self._to_child)
        _, status = os.waitpid(self.pid, 0)
        os.close(self._from_child)
        assert os.waitstatus_to_exitcode(status) == 0

    def kill_9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self._to_child)
        os.close(self._from_child)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[RunDir]:
    run = RunDir(tmp_path / "run")
    run.path.mkdir(mode=0o700)
    yield run


def _total(text: str) -> float:
    return sum(_series(text, "proxy_requests_total").values())


def test_any_worker_answers_for_all(run: RunDir) -> None:
    a = Worker(run, lambda m: _requests(m, 3, vault_up=1, key_version=3, offset=-5))
    b = Worker(run, lambda m: _requests(m, 5, ms=30.0, vault_up=0, key_version=2, offset=7))
    c = Worker(run, lambda m: None)
    try:
        for w in (a, b, c):
            text = w.scrape()
            assert _series(text, "proxy_requests_total") == {'{account="main",client="bot"}': 8.0}
            assert 'worker="' not in "".join(k for k in _series(text, "proxy_requests_total"))
            assert _series(text, "proxy_request_duration_seconds_count") == {'{account="main"}': 8.0}
            buckets = _series(text, "proxy_request_duration_seconds_bucket")
            assert buckets['{account="main",le="0.005"}'] == 3 and buckets['{account="main",le="0.05"}'] == 8
            assert _series(text, "proxy_vault_up") == {"": 0.0}                     # min: one worker down
            assert _series(text, "proxy_key_version") == {'{account="main"}': 2.0}  # min: oldest in use
            assert _series(text, "proxy_key_age_seconds") == {'{account="main"}': 300.0}  # max
            assert _series(text, "proxy_exchange_clock_offset_ms") == {   # per worker; c never set it
                f'{{account="main",worker="{a.pid}"}}': -5.0, f'{{account="main",worker="{b.pid}"}}': 7.0}
        assert render_shared(run.metrics) == a.scrape()
    finally:
        for w in (a, b, c):
            w.stop()


def test_a_killed_workers_counts_stay_and_its_gauges_go_when_retired(run: RunDir) -> None:
    a = Worker(run, lambda m: _requests(m, 2, vault_up=1))
    b = Worker(run, lambda m: _requests(m, 4, vault_up=0, offset=9))
    try:
        assert _total(a.scrape()) == 6
        b.kill_9()
        assert _total(a.scrape()) == 6                         # every count written as it happened
        run.write_worker(b.pid, {"pid": b.pid})
        run.retire(b.pid)                                      # what the supervisor does on exit
        assert not (run.path / f"worker-{b.pid}.json").exists()
        text = a.scrape()
        assert _total(text) == 6
        assert f'worker="{b.pid}"' not in text and _series(text, "proxy_vault_up") == {"": 1.0}
        c = Worker(run, lambda m: _requests(m, 1))              # a replacement adds to the total
        assert _total(c.scrape()) == 7
        c.stop()
        run.retire(c.pid)
        assert _total(a.scrape()) == 7
    finally:
        a.stop()
    run.retire(a.pid)
    assert _total(render_shared(run.metrics)) == 7
    assert _series(render_shared(run.metrics), "proxy_vault_up") == {}   # no live worker, no gauge


def test_a_reused_pid_counts_on(run: RunDir) -> None:
    """A new worker with the pid of a retired one continues its files: the sum stays right."""
    from prometheus_client import values

    def same_pid(m: Metrics) -> None:
        values.ValueClass = values.MultiProcessValue(lambda: 4242)  # type: ignore[no-untyped-call]
        _requests(m, 3)

    first = Worker(run, same_pid)
    first.kill_9()
    run.retire(4242)
    again = Worker(run, same_pid)
    try:
        assert _total(again.scrape()) == 6
    finally:
        again.stop()
