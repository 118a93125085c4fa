"""In-process Prometheus counters and histograms.

Deliberately tiny: a dict increment per request. ``render()`` shows this process alone
(series labelled ``worker``); the admin listener serves ``snapshot()``s of every worker of a
``serve`` merged into one view (proxy/ops/metrics_merge.py, proxy/ops/status.py).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
BUCKETS_MS = _BUCKETS_MS
#: a histogram series: one cumulative count per bucket, then the total count, then the sum (s)
SERIES_LEN = len(_BUCKETS_MS) + 2

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Snapshot:
    """One worker's metrics at one moment (or the folded totals of workers that exited)."""

    help: Mapping[str, tuple[str, str]] = field(default_factory=dict)    # name -> (kind, help)
    counters: Mapping[str, Mapping[Labels, float]] = field(default_factory=dict)
    gauges: Mapping[str, Mapping[Labels, float]] = field(default_factory=dict)
    hist: Mapping[str, Mapping[Labels, tuple[float, ...]]] = field(default_factory=dict)


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"'
        for k, v in labels
    )
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self.worker = str(os.getpid())
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hist: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}

    def inc(self, name: str, labels: Labels = (), value: float = 1.0, help: str = "") -> None:
        self._help.setdefault(name, ("counter", help))
        self._counters[name][labels] += value

    def set(self, name: str, labels: Labels, value: float, help: str = "") -> None:
        self._help.setdefault(name, ("gauge", help))
        self._gauges[name][labels] = value

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

    def snapshot(self) -> Snapshot:
        """A copy of every series now (the event loop is the only writer, so it is consistent)."""
        return Snapshot(
            help=dict(self._help),
            counters={n: dict(series) for n, series in self._counters.items()},
            gauges={n: dict(series) for n, series in self._gauges.items()},
            hist={n: {labels: tuple(s) for labels, s in series.items()} for n, series in self._hist.items()},
        )

    def render(self) -> str:
        lines: list[str] = []
        w = (("worker", self.worker),)
        for name, (kind, help_text) in sorted(self._help.items()):
            lines.append(f"# HELP {name} {help_text or name}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "counter":
                for labels, v in self._counters[name].items():
                    lines.append(f"{name}{_fmt(labels + w)} {v:g}")
            elif kind == "gauge":
                for labels, v in self._gauges[name].items():
                    lines.append(f"{name}{_fmt(labels + w)} {v:g}")
            else:
                for labels, s in self._hist[name].items():
                    for i, bound in enumerate(_BUCKETS_MS):
                        le = (("le", f"{bound / 1000:g}"),)
                        lines.append(f"{name}_bucket{_fmt(labels + w + le)} {s[i]:g}")
                    lines.append(f"{name}_bucket{_fmt(labels + w + (('le', '+Inf'),))} {s[-2]:g}")
                    lines.append(f"{name}_count{_fmt(labels + w)} {s[-2]:g}")
                    lines.append(f"{name}_sum{_fmt(labels + w)} {s[-1]:g}")
        return "\n".join(lines) + "\n"
