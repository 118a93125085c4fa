"""Reading for people: merged iteration, filters, outcome joins, table, CSV, tail -f."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time
from pathlib import Path

import orjson
import pytest

from proxy.audit.reader import (
    AuditIntegrityError,
    Filters,
    export_csv,
    follow,
    format_table,
    iter_records,
    json_lines,
    query,
)
from proxy.audit.writer import AuditWriter
from proxy.model.sensitive import Secret
from tests.audit.conftest import decision, lines, outcome, put_lines, write_trail

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def _ts(i: int) -> str:
    return (T0 + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _two_writers(d: Path, key: Secret) -> None:
    write_trail(d, key, "wa", records=6, make=lambda i: decision(2 * i, ts=_ts(2 * i)))
    write_trail(d, key, "wb", records=6, make=lambda i: decision(2 * i + 1, ts=_ts(2 * i + 1)))


def test_iter_records_merges_writers_by_ts(tmp_path: Path, key: Secret) -> None:
    _two_writers(tmp_path, key)
    got = [r["request_id"] for r in iter_records(tmp_path, key)]
    assert got == [f"req-{i}" for i in range(12)]
    first = next(iter_records(tmp_path))
    assert first["_writer"] == "wa" and first["_seq"] == 1 and "_mac" not in first


def test_iter_records_with_key_refuses_a_tampered_trail(tmp_path: Path, key: Secret) -> None:
    _two_writers(tmp_path, key)
    path = tmp_path / "wb.000000.jsonl"
    content = lines(path)
    del content[2]
    put_lines(path, content)
    with pytest.raises(AuditIntegrityError, match=r"wb\.000000\.jsonl:3"):
        list(iter_records(tmp_path, key))


def test_query_filters(tmp_path: Path, key: Secret) -> None:
    _two_writers(tmp_path, key)

    def ids(f: Filters) -> list[str]:
        return [r["request_id"] for r in query(tmp_path, f)]

    assert ids(Filters(client="bot-a")) == [f"req-{i}" for i in range(1, 12, 2)]
    assert ids(Filters(since=T0 + dt.timedelta(seconds=3), until=T0 + dt.timedelta(seconds=5))) \
        == ["req-3", "req-4", "req-5"]
    assert ids(Filters(request_id="req-7")) == ["req-7"]
    assert ids(Filters(symbol="ETHUSDT")) == []
    assert ids(Filters(account="binance-main", decision="deny")) == []
    assert len(ids(Filters(symbol="BTCUSDT", decision="allow"))) == 12


def test_query_keeps_an_outcome_with_its_matching_decision(tmp_path: Path, key: Secret) -> None:
    recs = [decision(1, ts=_ts(1)), decision(2, ts=_ts(2), client="other"),
            outcome(1, ts=_ts(3)), outcome(2, ts=_ts(4))]
    write_trail(tmp_path, key, records=4, make=lambda i: recs[i])
    got = [(r["request_id"], r["phase"]) for r in query(tmp_path, Filters(client="bot-a"))]
    assert got == [("req-1", "decision"), ("req-1", "outcome")]


def test_json_lines_and_table(tmp_path: Path, key: Secret) -> None:
    write_trail(tmp_path, key, records=2, make=lambda i: decision(i, rule="evil\x1b[2J"))
    recs = list(query(tmp_path))
    assert [orjson.loads(line)["request_id"] for line in json_lines(recs)] == ["req-0", "req-1"]
    table = format_table(recs).splitlines()
    assert table[0].split()[:3] == ["ts", "request_id", "phase"]
    assert "BTCUSDT" in table[1] and "\x1b" not in table[1]


def test_export_csv_flattens_intent_and_defuses_formulas(tmp_path: Path, key: Secret) -> None:
    write_trail(tmp_path, key, records=1, make=lambda i: decision(i, client="=HYPERLINK(1)"))
    out = io.StringIO()
    assert export_csv(query(tmp_path), out) == 1
    header, row = out.getvalue().splitlines()
    cols = dict(zip(header.split(","), row.split(","), strict=True))
    assert cols["intent.symbol"] == "BTCUSDT" and cols["intent.price"] == "50000"
    assert cols["client"] == "'=HYPERLINK(1)"


def test_follow_yields_new_records_as_they_are_written(tmp_path: Path, key: Secret) -> None:
    w = AuditWriter(tmp_path, key, "w1")
    w.start_sync()
    w.write_sync(decision(0))
    got: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for rec in follow(tmp_path, Filters(client="bot-a"), poll_s=0.01, stop=done.is_set):
            got.append(rec["request_id"])

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.05)
    for i in range(1, 4):
        w.write_sync(decision(i))
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    t.join(timeout=5)
    w.close_sync()
    assert got == ["req-1", "req-3"]
