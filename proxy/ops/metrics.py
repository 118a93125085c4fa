"""Prometheus metrics on ``prometheus_client``, one view for every worker of a ``serve``.

Call sites name a series as ``(name, labels)``; ``Metrics`` creates the prometheus_client
metric on first use (label names from that first call) and keeps each labelled child, so a
request pays one dict lookup and the library's increment.

With one worker the values live in this process. ``serve --workers N`` calls
``share_between_processes(dir)`` before it forks: every worker then writes each value into its
own mmap file in ``dir`` at the moment it changes (prometheus_client's multiprocess mode), and
whichever worker answers a scrape sums every file, so nothing is lost to a ``kill -9`` and a
counter never goes down. The rules:

- counters and histograms are **summed** over every file, those of exited workers included
  (the supervisor's ``process_exited`` deletes only gauge files), with no ``worker`` label;
- gauges named in ``GAUGE_MODES`` are **combined** over the live workers (``livemin``: the
  worst case, e.g. ``proxy_vault_up`` is 0 when any worker lost Vault, ``proxy_key_version`` is
  the oldest key still signing somewhere; ``livemax``: ``proxy_key_age_seconds`` is the oldest
  key's age); any other gauge is shown **per live worker** with a ``worker`` label (its pid),
  e.g. ``proxy_exchange_clock_offset_ms``, which each worker measures for itself.

One worker answers in the same format (the per-worker gauges carry its pid).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.metrics import disable_created_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# the `_created` series are not part of our format (and multiprocess mode has none)
disable_created_metrics()  # type: ignore[no-untyped-call]

BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_BUCKETS_S = tuple(ms / 1000 for ms in BUCKETS_MS)

#: gauges combined over the live workers; every other gauge is shown per worker
GAUGE_MODES: dict[str, str] = {
    "proxy_vault_up": "livemin",
    "proxy_key_version": "livemin",
    "proxy_key_age_seconds": "livemax",
    "proxy_audit_free_bytes": "livemin",
}
_PER_WORKER = "liveall"

Labels = tuple[tuple[str, str], ...]
_Family = Counter | Gauge | Histogram

#: the directory shared with the other workers, once ``share_between_processes`` ran
_shared: dict[str, Path] = {}


def share_between_processes(path: Path) -> None:
    """From now on (in this process and its forks) metrics are written to mmap files in
    ``path``. Called by the supervisor before it forks and before any metric exists.

    prometheus_client picks its value class from ``PROMETHEUS_MULTIPROC_DIR`` when it is first
    imported, which is long before ``serve`` knows its run directory; setting the class here
    (``values.ValueClass``, what every metric reads when it is created) does the same later."""
    path.mkdir(mode=0o700, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _shared["dir"] = path


def process_exited(pid: int, path: Path) -> None:
    """A worker exited: its gauges stop counting; its counters and histograms stay in the sums."""
    mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def render_shared(path: Path) -> str:
    """Prometheus text of every worker that ever wrote to ``path`` (see the module doc)."""
    collector = MultiProcessCollector(None, path=str(path))  # type: ignore[no-untyped-call]
    return _text(_relabel(collector.collect(), worker=None))  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self) -> None:
        self.worker = str(os.getpid())
        self._registry = CollectorRegistry(auto_describe=False)
        self._families: dict[str, _Family] = {}
        self._counters: dict[tuple[str, Labels], Counter] = {}
        self._gauges: dict[tuple[str, Labels], Gauge] = {}
        self._hist: dict[tuple[str, Labels], Histogram] = {}

    def inc(self, name: str, labels: Labels = (), value: float = 1.0, help: str = "") -> None:
        child = self._counters.get((name, labels))
        if child is None:
            if not name.endswith("_total"):
                raise ValueError(f"counter {name} must end in _total (Prometheus' naming)")
            family = self._family(name, labels, help, Counter)
            assert isinstance(family, Counter)
            child = self._counters[(name, labels)] = family.labels(**dict(labels)) if labels else family
        child.inc(value)

    def set(self, name: str, labels: Labels, value: float, help: str = "") -> None:
        child = self._gauges.get((name, labels))
        if child is None:
            family = self._family(name, labels, help, Gauge)
            assert isinstance(family, Gauge)
            child = self._gauges[(name, labels)] = family.labels(**dict(labels)) if labels else family
        child.set(value)

    def observe_ms(self, name: str, labels: Labels, ms: float, help: str = "") -> None:
        child = self._hist.get((name, labels))
        if child is None:
            family = self._family(name, labels, help, Histogram)
            assert isinstance(family, Histogram)
            child = self._hist[(name, labels)] = family.labels(**dict(labels)) if labels else family
        child.observe(ms / 1000)

    def _family(self, name: str, labels: Labels, help: str, kind: type[_Family]) -> _Family:
        family = self._families.get(name)
        if family is None:
            doc, names = help or name, [k for k, _ in labels]
            if kind is Counter:
                family = Counter(name, doc, names, registry=self._registry)
            elif kind is Gauge:
                family = Gauge(name, doc, names, registry=self._registry,
                               multiprocess_mode=GAUGE_MODES.get(name, _PER_WORKER))  # type: ignore[arg-type]
            else:
                family = Histogram(name, doc, names, registry=self._registry, buckets=_BUCKETS_S)
            self._families[name] = family
        if not isinstance(family, kind):
            raise ValueError(f"metric {name} is a {type(family).__name__}, not a {kind.__name__}")
        return family

    def render(self) -> str:
        """This process alone, or every worker of the ``serve`` once they share a directory."""
        if "dir" in _shared:
            return render_shared(_shared["dir"])
        return _text(_relabel(self._registry.collect(), worker=self.worker))


def _relabel(families: Iterable[Metric], worker: str | None) -> list[Metric]:
    """The one format of one or many workers: families sorted by name (empty ones left out),
    labels sorted by name with ``le`` and ``worker`` last, per-worker gauges labelled
    ``worker`` (prometheus_client's multiprocess ``pid``, or ``worker`` itself)."""
    out: list[Metric] = []
    for family in sorted(families, key=lambda f: f.name):
        if not family.samples:
            continue
        per_worker = family.type == "gauge" and family.name not in GAUGE_MODES
        fixed = Metric(family.name, family.documentation, family.type)
        for s in family.samples:
            labels = {k: s.labels[k] for k in sorted(s.labels) if k not in ("le", "pid")}
            if "le" in s.labels:
                labels["le"] = s.labels["le"]
            if per_worker:
                labels["worker"] = s.labels.get("pid", "") if worker is None else worker
            fixed.samples.append(s._replace(labels=labels))
        out.append(fixed)
    return out


class _Fixed:
    """A collector that yields families already collected (for ``generate_latest``)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _text(families: list[Metric]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry).decode()
