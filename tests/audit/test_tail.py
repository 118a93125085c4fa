"""tail / newest: the end of the trail, read backwards, then followed without a gap."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

from proxy.audit import review
from proxy.audit.reader import Filters
from proxy.audit.retention import prune
from proxy.audit.verify import verify
from proxy.audit.writer import AuditWriter
from proxy.model.sensitive import Secret
from tests.audit.conftest import decision, outcome, write_trail

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def _ts(i: int) -> str:
    return (T0 + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_tail_last_n_across_writers_and_segments(tmp_path: Path, key: Secret) -> None:
    write_trail(tmp_path, key, "wa", records=60, max_segment_bytes=3000,
                make=lambda i: decision(2 * i, ts=_ts(2 * i)))
    write_trail(tmp_path, key, "wb", records=60, max_segment_bytes=3000,
                make=lambda i: decision(2 * i + 1, ts=_ts(2 * i + 1)))
    assert len(list(tmp_path.glob("wa.*.jsonl"))) > 3  # really spans segments
    got = [r["request_id"] for r in review.tail(tmp_path, Filters(), 25)]
    assert got == [f"req-{i}" for i in range(95, 120)]
    odd = [r["request_id"] for r in review.tail(tmp_path, Filters(client="bot-a"), 3)]
    assert odd == ["req-115", "req-117", "req-119"]
    assert list(review.tail(tmp_path, Filters(), 0)) == []
    assert [r["request_id"] for r in review.newest(tmp_path, 4)] == [
        "req-116", "req-117", "req-118", "req-119"]


def test_tail_joins_outcomes_of_matching_decisions(tmp_path: Path, key: Secret) -> None:
    recs = [decision(1, ts=_ts(1)), decision(2, ts=_ts(2), client="x"), outcome(1, ts=_ts(3)),
            outcome(2, ts=_ts(4))]
    write_trail(tmp_path, key, records=4, make=lambda i: recs[i])
    got = [(r["request_id"], r["phase"]) for r in review.tail(tmp_path, Filters(client="bot-a"))]
    assert got == [("req-1", "decision"), ("req-1", "outcome")]


def test_tail_skips_a_torn_last_line(tmp_path: Path, key: Secret) -> None:
    write_trail(tmp_path, key, records=3, close=False)
    seg = tmp_path / "w1.000000.jsonl"
    with seg.open("ab") as f:
        f.write(b'{"request_id": "half')
    assert [r["request_id"] for r in review.tail(tmp_path, Filters(), 10)] == [
        "req-0", "req-1", "req-2"]


def test_tail_then_follow_loses_nothing_in_between(tmp_path: Path, key: Secret) -> None:
    w = AuditWriter(tmp_path, key, "w1")
    w.start_sync()
    for i in range(3):
        w.write_sync(decision(i))
    got: list[str] = []
    done = threading.Event()
    it = review.tail(tmp_path, Filters(), 2, keep_following=True, poll_s=0.01, stop=done.is_set)
    got.append(next(it)["request_id"])
    w.write_sync(decision(3))  # written after the window was read, before following began

    def reader() -> None:
        for rec in it:
            got.append(rec["request_id"])

    t = threading.Thread(target=reader)
    t.start()
    w2 = AuditWriter(tmp_path, key, "w2")  # a writer that starts later is followed too
    w2.start_sync()
    w2.write_sync(decision(4))
    deadline = time.monotonic() + 10
    while len(got) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    t.join(timeout=10)
    w.close_sync()
    w2.close_sync()
    assert got == ["req-1", "req-2", "req-3", "req-4"]


def test_prune_dry_run_changes_nothing(tmp_path: Path, key: Secret) -> None:
    write_trail(tmp_path, key, records=40, max_segment_bytes=2000, close=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = prune(tmp_path, key, older_than_s=60, clock=lambda: time.time() + 3600, dry_run=True)
    assert result.removed and result.tombstones == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert verify(tmp_path, key).ok
