"""Reading the trail for people: merged iteration, filters, a table, CSV, and tail -f.

Query output keeps ``_writer`` and ``_seq`` on every record so any line an auditor questions can
be found in its chain and checked with verify.
"""

from __future__ import annotations

import csv
import datetime as dt
import heapq
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from proxy.audit import chain, layout
from proxy.audit.record import PHASE, PHASE_OUTCOME
from proxy.audit.verify import verify
from proxy.errors import AuditIntegrityError
from proxy.model.sensitive import Secret


@dataclass(frozen=True)
class Filters:
    """Query filters; ``None`` matches anything. Times are inclusive bounds, UTC-aware."""

    client: str | None = None
    account: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    decision: str | None = None
    symbol: str | None = None
    request_id: str | None = None

    def matches(self, rec: dict[str, Any]) -> bool:
        for name in ("client", "account", "decision", "request_id"):
            want = getattr(self, name)
            if want is not None and rec.get(name) != want:
                return False
        if self.symbol is not None and symbol_of(rec) != self.symbol:
            return False
        if self.since is not None or self.until is not None:
            when = _when(rec)
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        return True


def symbol_of(rec: dict[str, Any]) -> Any:
    intent = rec.get("intent")
    return intent.get("symbol") if isinstance(intent, dict) else rec.get("symbol")


def _when(rec: dict[str, Any]) -> dt.datetime | None:
    ts = rec.get("ts")
    try:
        return chain.parse_ts(ts) if isinstance(ts, str) else None
    except ValueError:
        return None


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _chain_records(directory: Path, writer: str, segs: list[int]) -> Iterator[dict[str, Any]]:
    for seg in segs:
        try:
            f = (directory / layout.segment_name(writer, seg)).open("rb")
        except FileNotFoundError:
            continue  # pruned while we read
        with f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn tail: verify reports it
                rec = _parse(raw)
                if rec is not None and "_kind" not in rec:
                    rec.pop("_mac", None)
                    rec["_writer"] = writer
                    yield rec


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


def iter_records(directory: Path, key: Secret | None = None) -> Iterator[dict[str, Any]]:
    """Every caller record of every chain, merged by ``ts``.

    With the key the trail is verified first and AuditIntegrityError names the first bad
    record; without it records are read as they are (fine for a quick look, not for evidence).
    """
    directory = Path(directory)
    if key is not None:
        report = verify(directory, key)
        if not report.ok:
            raise AuditIntegrityError(f"audit trail failed verification: {report.first_bad}")
    listing = layout.list_chains(directory)
    streams = [_chain_records(directory, w, segs) for w, segs in sorted(listing.items())]
    yield from heapq.merge(*streams, key=lambda r: _when(r) or _EPOCH)


def query(
    directory: Path, filters: Filters = Filters(), key: Secret | None = None
) -> Iterator[dict[str, Any]]:
    """Matching records; an outcome follows its decision even if it lacks the filter fields."""
    yield from _select(iter_records(directory, key), filters)


def _select(
    records: Iterable[dict[str, Any]], filters: Filters, matched: set[str] | None = None
) -> Iterator[dict[str, Any]]:
    matched = set() if matched is None else matched
    for rec in records:
        rid = rec.get("request_id")
        if rec.get(PHASE) == PHASE_OUTCOME and isinstance(rid, str) and rid in matched:
            matched.discard(rid)
            yield rec
        elif filters.matches(rec):
            if isinstance(rid, str) and rec.get(PHASE) != PHASE_OUTCOME:
                matched.add(rid)
            yield rec


def json_lines(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    for rec in records:
        yield orjson.dumps(rec, option=orjson.OPT_SORT_KEYS).decode()


TABLE_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("ts", lambda r: r.get("ts")),
    ("request_id", lambda r: r.get("request_id")),
    ("phase", lambda r: r.get(PHASE)),
    ("client", lambda r: r.get("client")),
    ("account", lambda r: r.get("account")),
    ("method", lambda r: r.get("method")),
    ("path", lambda r: r.get("path")),
    ("decision", lambda r: r.get("decision")),
    ("rule", lambda r: r.get("rule")),
    ("symbol", symbol_of),
    ("side", lambda r: _intent(r, "side")),
    ("qty", lambda r: _intent(r, "quantity")),
    ("price", lambda r: _intent(r, "price")),
    ("status", lambda r: r.get("upstream_status")),
)


def _intent(rec: dict[str, Any], name: str) -> Any:
    intent = rec.get("intent")
    return intent.get(name) if isinstance(intent, dict) else None


def format_table(records: Iterable[dict[str, Any]]) -> str:
    """A fixed-width table for terminals; empty cells for missing fields."""
    rows = [[_cell(get(r)) for _, get in TABLE_COLUMNS] for r in records]
    header = [name for name, _ in TABLE_COLUMNS]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return "".join(ch if ch.isprintable() else "?" for ch in text)  # no terminal escapes


CSV_COLUMNS = (
    "ts", "request_id", "phase", "client", "account", "exchange", "method", "path", "category",
    "decision", "rule", "client_order_id", "intent.symbol", "intent.side", "intent.type",
    "intent.quantity", "intent.price", "intent.notional", "nonce", "exchange_order_id",
    "upstream_status", "upstream_latency_ms", "key_version", "policy_version", "_writer", "_seq",
)


def export_csv(
    records: Iterable[dict[str, Any]], out: TextIO, columns: tuple[str, ...] = CSV_COLUMNS
) -> int:
    """Write CSV (``intent.x`` reads a nested field); returns the row count.

    Cells that a spreadsheet would run as a formula are prefixed with ``'``.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for rec in records:
        writer.writerow([_csv_cell(_dotted(rec, c)) for c in columns])
        count += 1
    return count


def _dotted(rec: dict[str, Any], column: str) -> Any:
    value: Any = rec
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text):
        return "'" + text
    return text


_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def _is_number(text: str) -> bool:
    """A plain signed decimal: spreadsheets read it as a number, not a formula."""
    return _NUMBER.fullmatch(text) is not None


def follow(
    directory: Path,
    filters: Filters = Filters(),
    *,
    from_start: bool = False,
    poll_s: float = 0.25,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """``tail -f`` over every chain: new records as writers append them, new segments too.

    Records arrive per poll in ``ts`` order within that poll; keyless (run verify for proof).
    """
    directory = Path(directory)
    offsets: dict[str, int] = {}
    if not from_start:
        for name in _segment_files(directory):
            offsets[name] = (directory / name).stat().st_size
    yield from _follow_from(directory, filters, offsets, set(), poll_s, stop)


def _follow_from(
    directory: Path, filters: Filters, offsets: dict[str, int], matched: set[str],
    poll_s: float, stop: Callable[[], bool],
) -> Iterator[dict[str, Any]]:
    while not stop():
        batch: list[dict[str, Any]] = []
        for name in _segment_files(directory):
            batch += _read_new(directory, name, offsets)
        batch.sort(key=lambda r: _when(r) or _EPOCH)
        yield from _select(batch, filters, matched)
        if not batch:
            time.sleep(poll_s)


def tail(
    directory: Path,
    filters: Filters = Filters(),
    n: int = 20,
    *,
    keep_following: bool = False,
    poll_s: float = 0.25,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """The last ``n`` matching records (outcomes joined), then, if asked, ``follow`` on from
    exactly where they were read, so no record is lost or shown twice in between.

    Each chain is read backwards from its end only until it has ``n`` matching records, so the
    cost follows ``n`` and not the length of the trail.
    """
    directory = Path(directory)
    offsets: dict[str, int] = {}
    window = _newest(directory, n, filters, offsets)
    matched: set[str] = set()
    last = list(_select(window, filters, matched))[-n:] if n > 0 else []
    yield from last
    if keep_following:
        yield from _follow_from(directory, filters, offsets, matched, poll_s, stop)


def newest(directory: Path, limit: int) -> list[dict[str, Any]]:
    """About the newest ``limit`` records of the trail, oldest first, read from the end.

    Every chain contributes up to ``limit`` records and the merge keeps the last ``limit``:
    bounded work for a page view however long the trail is.
    """
    return _newest(Path(directory), limit, Filters(), {})[-limit:] if limit > 0 else []


def _newest(
    directory: Path, n: int, filters: Filters, offsets: dict[str, int]
) -> list[dict[str, Any]]:
    """Per chain, records backwards until ``n`` match; ``offsets`` gets where reading ended."""
    found: list[dict[str, Any]] = []
    for writer, segs in sorted(layout.list_chains(directory).items()):
        hits = 0
        for seg in reversed(segs):
            name = layout.segment_name(writer, seg)
            path = directory / name
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if hits >= n:
                offsets[name] = size  # older and sealed: follow never rereads it
                continue
            end, lines = _complete_lines_backwards(path, size)
            offsets[name] = end
            for raw in lines:
                rec = _parse(raw)
                if rec is None or "_kind" in rec:
                    continue
                rec.pop("_mac", None)
                rec["_writer"] = writer
                found.append(rec)
                if filters.matches(rec):
                    hits += 1
                    if hits >= n:
                        break
    found.sort(key=lambda r: _when(r) or _EPOCH)
    return found


_BLOCK = 1 << 16


def _complete_lines_backwards(path: Path, size: int) -> tuple[int, Iterator[bytes]]:
    """(end of the last whole line, that file's whole lines newest first, read lazily)."""
    with path.open("rb") as f:
        f.seek(max(0, size - _BLOCK))
        probe = f.read(size - max(0, size - _BLOCK))
    cut = probe.rfind(b"\n")
    end = 0 if cut < 0 else size - len(probe) + cut + 1
    if cut < 0 and size > _BLOCK:
        end = _last_newline_end(path, size)
    return end, _backwards(path, end)


def _last_newline_end(path: Path, size: int) -> int:
    with path.open("rb") as f:
        data = f.read(size)
    return data.rfind(b"\n") + 1


def _backwards(path: Path, end: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        pos, rest = end, b""
        while pos > 0:
            start = max(0, pos - _BLOCK)
            f.seek(start)
            data = f.read(pos - start) + rest
            pos = start
            parts = data.split(b"\n")
            rest = parts[0] if pos > 0 else b""
            body = parts[1:] if pos > 0 else parts
            for raw in reversed(body):
                if raw:
                    yield raw
        if rest:
            yield rest


def _segment_files(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if layout.parse_segment_name(n))


def _read_new(directory: Path, name: str, offsets: dict[str, int]) -> list[dict[str, Any]]:
    start = offsets.get(name, 0)
    try:
        with (directory / name).open("rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n") + 1  # leave a half-written line for the next poll
    offsets[name] = start + end
    parsed = layout.parse_segment_name(name)
    writer = parsed[0] if parsed else ""
    out = []
    for raw in data[:end].splitlines():
        rec = _parse(raw)
        if rec is not None and "_kind" not in rec:
            rec.pop("_mac", None)
            rec["_writer"] = writer
            out.append(rec)
    return out

