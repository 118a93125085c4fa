"""What the request metrics cost: prometheus_client (as shipped) against the dict it replaced.

A request records one counter (``proxy_requests_total``, four labels) and one histogram
observation (``proxy_request_duration_seconds``, one label), as ``pipeline/decision.py`` does.
Measured three ways, each the median of R rounds of N requests over a few label values:

- ``dict``: the hand-written ``Metrics`` this project had before (a dict increment, buckets
  counted in a list; copied here so the figure can be reproduced);
- ``prometheus_client, one worker``: ``proxy.ops.metrics.Metrics`` with values in memory;
- ``prometheus_client, --workers N``: the same after ``share_between_processes`` (what every
  worker of ``serve --workers N`` runs: each change written to the worker's mmap file).

Then the cost of one scrape of the shared directory. ``python bench/bench_metrics.py [N] [R]``
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from proxy.ops.metrics import Metrics, render_shared, share_between_processes

Labels = tuple[tuple[str, str], ...]
_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class DictMetrics:
    """The per-request part of the former hand-written ``proxy/ops/metrics.py``."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._hist: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}

    def inc(self, name: str, labels: Labels = (), value: float = 1.0, help: str = "") -> None:
        self._help.setdefault(name, ("counter", help))
        self._counters[name][labels] += value

    def observe_ms(self, name: str, labels: Labels, ms: float, help: str = "") -> None:
        self._help.setdefault(name, ("histogram", help))
        series = self._hist[name].get(labels)
        if series is None:
            series = self._hist[name][labels] = [0.0] * (len(_BUCKETS_MS) + 2)
        for i, bound in enumerate(_BUCKETS_MS):
            if ms <= bound:
                series[i] += 1
        series[-2] += 1
        series[-1] += ms / 1000


ACCOUNTS = ("binance-main", "kraken-main", "okx-main")


def one_round(m: DictMetrics | Metrics, n: int) -> float:
    """Microseconds per request over ``n`` requests."""
    start = time.perf_counter()
    for i in range(n):
        account = ACCOUNTS[i % 3]
        labels = (("account", account), ("decision", "allow"), ("status", "200"))
        m.inc("proxy_requests_total", (("client", "bot"), *labels),
              help="bot requests by client, account, decision and status")
        m.observe_ms("proxy_request_duration_seconds", (("account", account),), 1.7 + (i % 7),
                     help="time in the proxy including the exchange")
    return (time.perf_counter() - start) / n * 1e6


def measure(make: Callable[[], DictMetrics | Metrics], n: int, rounds: int) -> float:
    m = make()
    one_round(m, 100)  # series created
    return statistics.median(one_round(m, n) for _ in range(rounds))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    print(f"per request (one counter, one histogram observation), median of {rounds} x {n}:")
    print(f"  dict (before)                      {measure(DictMetrics, n, rounds):6.2f} us")
    print(f"  prometheus_client, one worker      {measure(Metrics, n, rounds):6.2f} us")
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp) / "metrics"
        pid = os.fork()  # the shared mode is per process (and its forks), as in serve
        if pid == 0:
            code = 1
            try:
                share_between_processes(shared)
                print(f"  prometheus_client, --workers N     {measure(Metrics, n, rounds):6.2f} us",
                      flush=True)
                code = 0
            finally:
                os._exit(code)
        os.waitpid(pid, 0)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            render_shared(shared)
            times.append((time.perf_counter() - start) * 1000)
        print(f"one scrape of the shared directory (one worker's files): {statistics.median(times):.2f} ms")


if __name__ == "__main__":
    main()
