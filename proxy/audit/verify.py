"""Verify a trail: every chain, every link, every seal, every cross-chain anchor.

Runs in one streaming pass per chain (plus a cheap pre-scan of segment first and last lines for
anchors), so memory stays small however long the trail. Each chain stops at its first bad
record: after that nothing in it can be trusted, and the location is what an auditor needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from proxy.audit import chain, layout
from proxy.audit.record import PHASE, PHASE_DECISION, PHASE_OUTCOME, is_lost_answer
from proxy.audit.tombstones import Tombstone, read_tombstones
from proxy.errors import TrailFileError
from proxy.model.sensitive import Secret


@dataclass(frozen=True)
class Location:
    """A line in a file of the trail (1-based), with the chain position when known."""

    file: str
    line: int
    writer: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return where if self.seq is None else f"{where} (seq {self.seq})"


@dataclass(frozen=True)
class Problem:
    location: Location
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


@dataclass(frozen=True)
class PendingIntent:
    """An allowed decision with no outcome: a crash or lost answer between the two."""

    request_id: str
    ts: str
    location: Location


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    first_bad: Problem | None
    problems: tuple[Problem, ...]
    records: int
    chains: int
    segments: int
    torn: tuple[Location, ...]
    open_chains: tuple[str, ...]
    intents_without_outcome: tuple[PendingIntent, ...]
    #: requests sent whose answer was lost (timeout, unreachable): the order may exist
    lost_answers: tuple[PendingIntent, ...] = ()

    def summary(self) -> str:
        """Human lines for ``audit verify``: the verdict first, then what deserves a look."""
        lines = [
            f"{'OK' if self.ok else 'FAILED'}: {self.records} records in {self.chains} chains, "
            f"{self.segments} segments"
        ]
        if self.first_bad:
            lines.append(f"first bad record: {self.first_bad}")
        lines += [f"torn last record (crash while writing): {loc}" for loc in self.torn]
        lines += [f"open chain (writer running, or crashed): {w}" for w in self.open_chains]
        lines += [
            f"intent without outcome: request {p.request_id} at {p.ts} ({p.location})"
            for p in self.intents_without_outcome
        ]
        lines += [
            f"lost answer (the order may exist; look it up): request {p.request_id} at {p.ts} "
            f"({p.location})"
            for p in self.lost_answers
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Ctx:
    """What every chain's pass shares."""

    directory: Path
    tkey: chain.MacKey
    trail_id: str
    intents: _Intents


@dataclass
class _Chain:
    """What one chain's pass learned (internal scratch)."""

    writer: str
    problem: Problem | None = None
    records: int = 0
    segments: int = 0
    torn: Location | None = None
    final: bool = False
    last_seq: int = -1
    pruned_seq: int = -1
    end: Location | None = None
    tail: Location | None = None
    dangling: Problem | None = None
    wanted: set[int] = field(default_factory=set)
    seen: dict[int, tuple[str, Location]] = field(default_factory=dict)
    anchors: list[tuple[chain.Anchor, Location]] = field(default_factory=list)


@dataclass
class _Intents:
    pending: dict[str, PendingIntent] = field(default_factory=dict)
    early_outcomes: set[str] = field(default_factory=set)
    lost: dict[str, PendingIntent] = field(default_factory=dict)

    def see(self, rec: dict[str, Any], loc: Location) -> None:
        rid = rec.get("request_id")
        if not isinstance(rid, str):
            return
        phase = rec.get(PHASE)
        if rec.get("idempotent_replay") is True:
            return  # answered from the idempotency store: nothing was sent, no outcome follows
        if phase == PHASE_DECISION and rec.get("decision") == "allow":
            if rid in self.early_outcomes:
                self.early_outcomes.discard(rid)
            else:
                self.pending[rid] = PendingIntent(rid, str(rec.get("ts", "")), loc)
        elif phase == PHASE_OUTCOME:
            if self.pending.pop(rid, None) is None:
                self.early_outcomes.add(rid)
            if is_lost_answer(rec):
                self.lost[rid] = PendingIntent(rid, str(rec.get("ts", "")), loc)


def verify(directory: Path, key: Secret) -> VerifyReport:
    """Check the whole trail in ``directory`` with the chain key; never raises for tampering."""
    directory = Path(directory)
    chain_key = chain.key_bytes(key)
    try:
        trail = layout.read_trail(directory, chain_key)
    except TrailFileError as exc:
        return _report([Problem(Location(layout.TRAIL_FILE, 1), str(exc))], [], _Intents())
    tkey = chain.trail_key(chain_key, trail.trail_id)
    tombs, tomb_problems = read_tombstones(directory, tkey)
    problems = [Problem(Location(layout.TOMBSTONE_FILE, p.line), p.reason) for p in tomb_problems]
    problems += [
        Problem(Location(name, 1), "unexpected file in the audit directory (planted or renamed)")
        for name in layout.stray_files(directory)
    ]
    listing = layout.list_chains(directory)
    wanted = _prescan_anchors(directory, listing)
    intents = _Intents()
    ctx = _Ctx(directory, tkey, trail.trail_id, intents)
    results: dict[str, _Chain] = {}
    for writer in sorted(listing):
        res = _Chain(writer, wanted=wanted.get(writer, set()))
        _verify_chain(ctx, res, listing[writer], tombs.get(writer))
        results[writer] = res
    problems += [r.problem for r in results.values() if r.problem]
    problems += _check_anchors(results, tombs)
    problems += _unsealed_after_clean_exit(directory, list(results.values()))
    return _report(problems, list(results.values()), intents)


def _report(problems: list[Problem], chains: list[_Chain], intents: _Intents) -> VerifyReport:
    closed = _closed_by_anchor(chains)
    return VerifyReport(
        ok=not problems,
        first_bad=problems[0] if problems else None,
        problems=tuple(problems),
        records=sum(c.records for c in chains),
        chains=len(chains),
        segments=sum(c.segments for c in chains),
        torn=tuple(c.torn for c in chains if c.torn),
        open_chains=tuple(
            c.writer for c in chains if not c.final and not c.problem and c.writer not in closed
        ),
        intents_without_outcome=tuple(sorted(intents.pending.values(), key=lambda p: p.ts)),
        lost_answers=tuple(sorted(intents.lost.values(), key=lambda p: p.ts)),
    )


def _unsealed_after_clean_exit(directory: Path, chains: list[_Chain]) -> list[Problem]:
    """An unsealed chain whose lock file is gone was cut: writers remove it only after sealing.

    A running or crashed writer keeps its lock file, so its unsealed end (even one that stops
    right after a rotation seal) is reported as open, not as tampering.
    """
    closed = _closed_by_anchor(chains)
    problems = []
    for c in chains:
        if c.problem or c.final or c.writer in closed:
            continue
        if (directory / f"{c.writer}{layout.LOCK_SUFFIX}").exists():
            continue
        problems.append(c.dangling or Problem(
            c.tail or Location(layout.segment_name(c.writer, 0), 1, c.writer),
            "chain is not sealed although its writer exited cleanly (lock file gone): "
            "records were cut off the end",
        ))
    return problems


def _closed_by_anchor(chains: list[_Chain]) -> set[str]:
    by_writer = {c.writer: c for c in chains}
    return {
        a.writer for c in chains for a, _ in c.anchors
        if a.closed and a.writer in by_writer and by_writer[a.writer].last_seq == a.seq
    }


def _prescan_anchors(directory: Path, listing: dict[str, list[int]]) -> dict[str, set[int]]:
    """Which (writer, seq) some open/seal record anchors: only those MACs are kept in memory."""
    wanted: dict[str, set[int]] = {}
    for writer, segs in listing.items():
        for seg in segs:
            path = directory / layout.segment_name(writer, seg)
            for line in (_first_line(path), layout.last_complete_line(path)):
                try:
                    anchors = chain.anchors_from_json(orjson.loads(line or b"{}").get("_anchors"))
                except (orjson.JSONDecodeError, ValueError, AttributeError):
                    continue
                for a in anchors:
                    wanted.setdefault(a.writer, set()).update((a.seq, a.seq + 1))
    return wanted


def _first_line(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            line = f.readline(1 << 16)
    except OSError:
        return None
    return line if line.endswith(b"\n") else None


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes without newline, newline-terminated) for each line of a file."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            complete = raw.endswith(b"\n")
            yield n, raw[:-1] if complete else raw, complete


def _verify_chain(ctx: _Ctx, res: _Chain, segs: list[int], tomb: Tombstone | None) -> None:
    writer = res.writer
    if tomb is not None:
        segs = [s for s in segs if s >= tomb.upto]  # older leftovers: a prune cut short
        res.pruned_seq = tomb.seq
    if not segs:  # only reachable through a tombstone: every segment was pruned
        res.final, res.last_seq = True, res.pruned_seq
        if tomb is not None and not tomb.whole:
            res.problem = Problem(
                Location(layout.segment_name(writer, tomb.upto), 1, writer, tomb.seq + 1),
                "segments after the pruned ones are missing (deleted)",
            )
        return
    if segs[0] == 0:
        prev, seq = chain.GENESIS_PREV, 0
    elif tomb is not None and segs[0] == tomb.upto:
        prev, seq = bytes.fromhex(tomb.mac), tomb.seq + 1
    else:
        name = layout.segment_name(writer, segs[0])
        res.problem = Problem(
            Location(name, 1, writer),
            f"chain starts at segment {segs[0]}: earlier segments were deleted (no tombstone)",
        )
        return
    sealed_final = False
    for i, seg in enumerate(segs):
        name = layout.segment_name(writer, seg)
        if seg != segs[0] + i:
            res.problem = Problem(
                Location(layout.segment_name(writer, segs[0] + i), 1, writer, seq),
                f"segment {segs[0] + i} is missing: deleted from the middle of the chain",
            )
            return
        if sealed_final:
            res.problem = Problem(Location(name, 1, writer), "segment after a final seal")
            return
        is_last = i == len(segs) - 1
        res.segments += 1
        outcome = _verify_segment(ctx, res, seg, prev, seq, is_last=is_last)
        if res.problem is not None or outcome is None:
            return
        prev, seq, sealed, sealed_final = outcome
        if not sealed and not is_last:
            res.problem = Problem(
                Location(name, res.end.line + 1 if res.end else 1, writer, seq),
                "segment ends without its seal: records were cut off its end",
            )
            return
        if sealed and not sealed_final and is_last:
            res.dangling = Problem(
                Location(layout.segment_name(writer, seg + 1), 1, writer, seq),
                f"segment {seg + 1} is missing: its predecessor was sealed for rotation",
            )
    res.final = sealed_final


def _verify_segment(
    ctx: _Ctx, res: _Chain, seg: int, prev: bytes, seq: int, *, is_last: bool
) -> tuple[bytes, int, bool, bool] | None:
    """Walk one segment; returns (prev, next seq, sealed, final) or None after a problem."""
    writer = res.writer
    name = layout.segment_name(writer, seg)
    res.tail = Location(name, 1, writer, seq)
    sealed = final = False
    count = 0
    for n, raw, complete in _lines(ctx.directory / name):
        loc = Location(name, n, writer, seq)
        if not complete:
            if is_last:
                res.torn = loc
                return prev, seq, sealed, final
            res.problem = Problem(loc, "line is not newline-terminated")
            return None
        if sealed:
            res.problem = Problem(loc, "record after the segment's seal (appended)")
            return None
        reason, rec, mac = _check_line(raw, ctx.tkey, prev, seq)
        if reason is None and rec is not None:
            reason = _check_kind(rec, n, writer=writer, seg=seg, trail_id=ctx.trail_id, count=count)
        if reason is not None or rec is None or mac is None:
            res.problem = Problem(loc, reason or "unreadable")
            return None
        kind = rec.get("_kind")
        if kind is None:
            res.records += 1
            ctx.intents.see(rec, loc)
        else:
            try:
                res.anchors += [(a, loc) for a in chain.anchors_from_json(rec.get("_anchors"))]
            except ValueError as exc:
                res.problem = Problem(loc, str(exc))
                return None
            if kind == chain.KIND_SEAL:
                sealed, final = True, rec.get("_final") is True
        if seq in res.wanted:
            res.seen[seq] = (mac.hex(), loc)
        res.last_seq, res.end = seq, loc
        res.tail = Location(name, n + 1, writer, seq + 1)
        prev, seq, count = mac, seq + 1, count + 1
    return prev, seq, sealed, final


def _check_line(
    raw: bytes, tkey: chain.MacKey, prev: bytes, seq: int
) -> tuple[str | None, dict[str, Any] | None, bytes | None]:
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "not valid JSON (edited or damaged)", None, None
    if not isinstance(rec, dict):
        return "not a JSON object", None, None
    if chain.canonical(rec) != raw:
        return "not in canonical form (edited by hand)", None, None
    got_seq, got_mac = rec.pop("_seq", None), rec.pop("_mac", None)
    if not isinstance(got_seq, int) or not isinstance(got_mac, str):
        return "missing _seq or _mac (not a chained record)", None, None
    if got_seq > seq:
        return f"expected seq {seq}, found {got_seq}: records deleted or reordered", None, None
    if got_seq < seq:
        return f"expected seq {seq}, found {got_seq}: records inserted or reordered", None, None
    rec["_seq"] = got_seq
    mac = chain.link(tkey, prev, chain.canonical(rec))
    if not chain.mac_equal(mac, got_mac):
        return (
            "MAC does not match: record edited, or copied from another chain or trail, "
            "or the key is wrong", None, None,
        )
    return None, rec, mac


def _check_kind(
    rec: dict[str, Any], n: int, *, writer: str, seg: int, trail_id: str, count: int
) -> str | None:
    kind = rec.get("_kind")
    if n == 1:
        if kind != chain.KIND_OPEN:
            return "first line of a segment is not its open record"
        if rec.get("_trail") != trail_id:
            return "open record names another trail (copied in)"
        if rec.get("_writer") != writer or rec.get("_seg") != seg:
            return "open record names another writer or segment (file renamed)"
        return None
    if kind == chain.KIND_OPEN:
        return "open record in the middle of a segment (inserted)"
    if kind == chain.KIND_SEAL:
        if rec.get("_writer") != writer or rec.get("_seg") != seg:
            return "seal names another writer or segment"
        if rec.get("_records") != count:
            return f"seal counts {rec.get('_records')} records, segment has {count}"
        return None
    return None if kind is None else f"unknown record kind {kind!r}"


def _check_anchors(results: dict[str, _Chain], tombs: dict[str, Tombstone]) -> list[Problem]:
    """Every anchor one chain took of another must still hold: nothing cut, nothing rewritten."""
    problems: list[Problem] = []
    for res in results.values():
        if res.problem:
            continue
        for anchor, where in res.anchors:
            target = results.get(anchor.writer)
            tomb = tombs.get(anchor.writer)
            if target is None:
                if tomb is None or not tomb.whole or anchor.seq > tomb.seq:
                    problems.append(Problem(
                        where, f"anchors chain {anchor.writer} at seq {anchor.seq}, "
                        "but that chain is gone (deleted)",
                    ))
                continue
            if target.problem or anchor.seq <= target.pruned_seq:
                continue
            problem = _anchor_problem(anchor, target, res.writer)
            if problem:
                problems.append(problem)
    return problems


def _anchor_problem(anchor: chain.Anchor, target: _Chain, by: str) -> Problem | None:
    end = target.end or Location(layout.segment_name(target.writer, 0), 1, target.writer)
    if anchor.seq > target.last_seq:
        return Problem(
            target.tail or end,
            f"records cut off the end: writer {by} saw seq {anchor.seq} in this chain",
        )
    mac, loc = target.seen[anchor.seq]
    if mac != anchor.mac:
        return Problem(loc, f"record differs from the one writer {by} anchored (rewritten)")
    if anchor.closed and anchor.seq < target.last_seq:
        _, after = target.seen.get(anchor.seq + 1, ("", end))
        return Problem(after, f"record after the chain was closed as crashed by {by} (appended)")
    return None
