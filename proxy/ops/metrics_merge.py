"""One Prometheus view of every worker of a ``serve``: pure merging of metric snapshots.

Why snapshots rather than Prometheus' multiprocess mode (mmap files per process): our
``Metrics`` is a dict increment on the hot path and stays so; a worker publishes a whole
snapshot about once a second (and just before it answers a scrape), so readers never see a
half-written value, and nothing here needs a lock. The rules, the same as prometheus_client's
multiprocess ``sum``/``min``/``max``/``all`` modes:

- counters and histograms (buckets, counts, sums) are **summed** over every worker, plus the
  ``retired`` totals of workers that exited, so a sum never goes backwards when a worker dies
  and is replaced; they carry no ``worker`` label;
- gauges named in ``GAUGE_MODES`` are **combined** over the live workers (``min``: the worst
  case, e.g. ``proxy_vault_up`` is 0 when any worker lost Vault, ``proxy_key_version`` is the
  oldest key still signing somewhere; ``max``: ``proxy_key_age_seconds`` is the oldest key's
  age); any other gauge is shown **per live worker** with a ``worker`` label (the pid), e.g.
  ``proxy_exchange_clock_offset_ms`` which each worker measures for itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from proxy.ops.metrics import BUCKETS_MS, SERIES_LEN, Labels, Snapshot, _fmt

GAUGE_MODES: Mapping[str, str] = {
    "proxy_vault_up": "min",
    "proxy_key_version": "min",
    "proxy_key_age_seconds": "max",
    "proxy_audit_free_bytes": "min",
}


def add(total: Snapshot, more: Snapshot) -> Snapshot:
    """Counters and histograms of both summed (gauges are dropped: they describe live workers)."""
    help_ = dict(total.help)
    for name, meta in more.help.items():
        if meta[0] in ("counter", "histogram"):
            help_.setdefault(name, meta)
    return Snapshot(help=help_, counters=_sum_counters((total, more)), hist=_sum_hist((total, more)))


def render(live: Mapping[str, Snapshot], retired: Snapshot | None = None) -> str:
    """Prometheus text for live workers (keyed by pid) plus the totals of exited ones."""
    everyone = [*live.values(), *([retired] if retired is not None else [])]
    help_: dict[str, tuple[str, str]] = {}
    for snap in everyone:
        for name, meta in snap.help.items():
            help_.setdefault(name, meta)
    counters, hist = _sum_counters(everyone), _sum_hist(everyone)
    lines: list[str] = []
    for name, (kind, help_text) in sorted(help_.items()):
        body: list[str] = []
        if kind == "counter":
            body = [f"{name}{_fmt(labels)} {v:g}" for labels, v in sorted(counters.get(name, {}).items())]
        elif kind == "histogram":
            for labels, s in sorted(hist.get(name, {}).items()):
                for i, bound in enumerate(BUCKETS_MS):
                    body.append(f"{name}_bucket{_fmt((*labels, ('le', f'{bound / 1000:g}')))} {s[i]:g}")
                body.append(f"{name}_bucket{_fmt((*labels, ('le', '+Inf')))} {s[-2]:g}")
                body.append(f"{name}_count{_fmt(labels)} {s[-2]:g}")
                body.append(f"{name}_sum{_fmt(labels)} {s[-1]:g}")
        elif kind == "gauge":
            body = _gauge_lines(name, live)
        if body:
            lines += [f"# HELP {name} {help_text or name}", f"# TYPE {name} {kind}", *body]
    return "\n".join(lines) + "\n" if lines else ""


def _gauge_lines(name: str, live: Mapping[str, Snapshot]) -> list[str]:
    mode = GAUGE_MODES.get(name)
    if mode is None:
        return [f"{name}{_fmt((*labels, ('worker', pid)))} {v:g}"
                for pid, snap in sorted(live.items())
                for labels, v in sorted(snap.gauges.get(name, {}).items())]
    values: dict[Labels, list[float]] = defaultdict(list)
    for snap in live.values():
        for labels, v in snap.gauges.get(name, {}).items():
            values[labels].append(v)
    pick = min if mode == "min" else max
    return [f"{name}{_fmt(labels)} {pick(vs):g}" for labels, vs in sorted(values.items())]


def _sum_counters(snaps: Iterable[Snapshot]) -> dict[str, dict[Labels, float]]:
    out: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
    for snap in snaps:
        for name, series in snap.counters.items():
            for labels, v in series.items():
                out[name][labels] += v
    return out


def _sum_hist(snaps: Iterable[Snapshot]) -> dict[str, dict[Labels, tuple[float, ...]]]:
    out: dict[str, dict[Labels, tuple[float, ...]]] = defaultdict(dict)
    for snap in snaps:
        for name, series in snap.hist.items():
            for labels, s in series.items():
                if len(s) != SERIES_LEN:
                    continue  # another bucket layout (never within one serve): not summable
                held = out[name].get(labels)
                out[name][labels] = (tuple(s) if held is None
                                     else tuple(a + b for a, b in zip(held, s, strict=True)))
    return out


# -- JSON form, as written to the run directory -------------------------------------------


def to_json(snap: Snapshot) -> dict[str, Any]:
    return {
        "help": {n: list(meta) for n, meta in snap.help.items()},
        "counters": {n: [[_pairs(lb), v] for lb, v in s.items()] for n, s in snap.counters.items()},
        "gauges": {n: [[_pairs(lb), v] for lb, v in s.items()] for n, s in snap.gauges.items()},
        "hist": {n: [[_pairs(lb), list(v)] for lb, v in s.items()] for n, s in snap.hist.items()},
    }


def from_json(doc: object) -> Snapshot:
    """The inverse of ``to_json``; ``ValueError`` for anything else (a garbled file)."""
    try:
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        help_ = {str(n): (str(k), str(h)) for n, (k, h) in doc.get("help", {}).items()}
        counters = {str(n): _values(s) for n, s in doc.get("counters", {}).items()}
        gauges = {str(n): _values(s) for n, s in doc.get("gauges", {}).items()}
        hist = {str(n): {_labels(lb): tuple(float(x) for x in v) for lb, v in s}
                for n, s in doc.get("hist", {}).items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a metrics snapshot: {exc}") from exc
    return Snapshot(help=help_, counters=counters, gauges=gauges, hist=hist)


def _pairs(labels: Labels) -> list[list[str]]:
    return [[k, v] for k, v in labels]


def _values(series: Iterable[Any]) -> dict[Labels, float]:
    return {_labels(lb): float(v) for lb, v in series}


def _labels(raw: object) -> Labels:
    if not isinstance(raw, list):
        raise ValueError("labels must be a list")
    return tuple((str(k), str(v)) for k, v in raw)
