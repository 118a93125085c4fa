"""Merging several workers' metrics into one Prometheus view (proxy/ops/metrics_merge.py): sums
for counters and histograms, retired totals folded in, gauges combined or per worker."""

from __future__ import annotations

import json

import pytest

from proxy.ops.metrics import Metrics, Snapshot
from proxy.ops.metrics_merge import add, from_json, render, to_json

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


def _worker(requests: int, ms: float = 3.0, vault_up: float = 1, key_version: float = 2,
            offset: float = 0.0) -> Snapshot:
    m = Metrics()
    for _ in range(requests):
        m.inc("proxy_requests_total", REQ, help="requests")
        m.observe_ms("proxy_request_duration_seconds", (("account", "main"),), ms, help="latency")
    m.set("proxy_vault_up", (), vault_up, help="vault")
    m.set("proxy_key_version", (("account", "main"),), key_version, help="key")
    m.set("proxy_key_age_seconds", (("account", "main"),), 100 * key_version, help="age")
    m.set("proxy_exchange_clock_offset_ms", (("account", "main"),), offset, help="offset")
    return m.snapshot()


def test_counters_are_summed_without_a_worker_label() -> None:
    text = render({"11": _worker(3), "12": _worker(4), "13": _worker(0)})
    assert _series(text, "proxy_requests_total") == {'{client="bot",account="main"}': 7.0}
    assert "# TYPE proxy_requests_total counter" in text


def test_histograms_sum_buckets_counts_and_sums() -> None:
    text = render({"11": _worker(2, ms=3.0), "12": _worker(1, ms=30.0)})
    buckets = _series(text, "proxy_request_duration_seconds_bucket")
    assert buckets['{account="main",le="0.002"}'] == 0
    assert buckets['{account="main",le="0.005"}'] == 2      # the two 3 ms requests
    assert buckets['{account="main",le="0.025"}'] == 2
    assert buckets['{account="main",le="0.05"}'] == 3       # and the 30 ms one
    assert buckets['{account="main",le="+Inf"}'] == 3
    assert _series(text, "proxy_request_duration_seconds_count") == {'{account="main"}': 3}
    assert _series(text, "proxy_request_duration_seconds_sum")['{account="main"}'] == pytest.approx(0.036)


def test_retired_totals_keep_a_dead_workers_counts() -> None:
    retired = add(add(Snapshot(), _worker(5)), _worker(2))
    text = render({"20": _worker(1)}, retired)
    assert _series(text, "proxy_requests_total") == {'{client="bot",account="main"}': 8.0}
    assert _series(text, "proxy_request_duration_seconds_count") == {'{account="main"}': 8.0}


def test_retired_totals_hold_no_gauges() -> None:
    retired = add(Snapshot(), _worker(5, vault_up=0, offset=99))
    assert retired.gauges == {}
    text = render({"20": _worker(0, vault_up=1, offset=1)}, retired)
    assert _series(text, "proxy_vault_up") == {"": 1.0}
    assert _series(text, "proxy_exchange_clock_offset_ms") == {'{account="main",worker="20"}': 1.0}


def test_gauges_are_combined_or_per_worker() -> None:
    text = render({"11": _worker(0, vault_up=1, key_version=3, offset=-5),
                   "12": _worker(0, vault_up=0, key_version=2, offset=7)})
    assert _series(text, "proxy_vault_up") == {"": 0.0}                      # min: any worker down
    assert _series(text, "proxy_key_version") == {'{account="main"}': 2.0}   # min: oldest in use
    assert _series(text, "proxy_key_age_seconds") == {'{account="main"}': 300.0}  # max
    assert _series(text, "proxy_exchange_clock_offset_ms") == {
        '{account="main",worker="11"}': -5.0, '{account="main",worker="12"}': 7.0}


def test_one_worker_looks_like_many() -> None:
    text = render({"11": _worker(2)})
    assert _series(text, "proxy_requests_total") == {'{client="bot",account="main"}': 2.0}
    assert render({}) == ""


def test_json_round_trip_through_text() -> None:
    snap = _worker(3, ms=12.0, offset=4)
    again = from_json(json.loads(json.dumps(to_json(snap))))
    assert again == snap


@pytest.mark.parametrize("doc", [None, [], {"counters": {"x": [["a", 1]]}}, {"counters": {"x": [[[], "z"]]}},
                                 {"help": {"x": "counter"}}])
def test_garbled_snapshots_are_refused(doc: object) -> None:
    with pytest.raises(ValueError, match="not a metrics snapshot"):
        from_json(doc)


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.inc("proxy_requests_total", (("client", 'a"b\\c\nd'),))
    text = render({"1": m.snapshot()})
    assert 'proxy_requests_total{client="a\\"b\\\\c d"} 1' in text
