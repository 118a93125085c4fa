"""Verify a trail with the checkpoint public key alone, and prove single records.

This is the auditor's check: no Vault secret is needed, so whoever runs it still cannot write a
trail that passes it. Every chain is read once; each line is a leaf of its writer's Merkle tree
(RFC 9162), and every checkpoint found beside the trail or in the witness must be signed by a
trusted key and match the root of the lines it covers. What it finds:

- an edited, inserted, deleted or reordered line under a checkpoint: the root differs;
- a checkpoint that does not match the records, or signed by another key;
- a chain cut back, or rolled back to an earlier state: a checkpoint (from the witness, or left
  in the local file) covers more lines than the chain has; a chain deleted outright while its
  checkpoints remain;
- the structure the HMAC verify also checks without its key: whole canonical lines, ``_seq`` in
  order, open and seal records in place, segments contiguous.

Lines after a chain's last checkpoint are not yet signed (a running writer, or a crash before
the next checkpoint): they are listed as unsigned, not passed as proven. ``audit verify`` with
the chain key still checks their HMAC links.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.audit import chain, checkpoint, layout, merkle, witness
from proxy.audit.verify import (
    Location,
    Problem,
    _check_kind,
    _first_line,
    _lines,
    _prescan_anchors,
)


@dataclass(frozen=True)
class Unsigned:
    """Lines of a chain no checkpoint covers yet: not proven, not disproven."""

    writer: str
    first_seq: int
    lines: int


@dataclass(frozen=True)
class SignedReport:
    ok: bool
    first_bad: Problem | None
    problems: tuple[Problem, ...]
    chains: int
    lines: int
    checkpoints: int
    witnessed: int
    unsigned: tuple[Unsigned, ...]
    torn: tuple[Location, ...]
    key_ids: tuple[str, ...]
    #: chains whose older segments were pruned before they had checkpoints: not checked here
    unchecked: tuple[str, ...] = ()
    #: chains gone whole, excused by a retention tombstone (whose MAC only the HMAC verify checks)
    pruned: tuple[str, ...] = ()

    def summary(self) -> str:
        lines = [
            f"{'OK' if self.ok else 'FAILED'} (public key {', '.join(self.key_ids)}): "
            f"{self.lines} lines in {self.chains} chains under {self.checkpoints} signed "
            f"checkpoints ({self.witnessed} from the witness)"
        ]
        if self.first_bad:
            lines.append(f"first bad: {self.first_bad}")
        lines += [f"problem: {p}" for p in self.problems[1:]]
        lines += [f"torn last record (crash while writing): {loc}" for loc in self.torn]
        lines += [f"not checked (pruned before it had checkpoints): {w}" for w in self.unchecked]
        lines += [f"pruned whole by retention (tombstone in {layout.TOMBSTONE_FILE}; its MAC is "
                  f"checked by the HMAC verify): {w}" for w in self.pruned]
        lines += [
            f"not yet signed: {u.writer} seq {u.first_seq}.. ({u.lines} lines; a running writer, "
            "or a crash before its next checkpoint)"
            for u in self.unsigned
        ]
        return "\n".join(lines)


@dataclass
class _Claim:
    cp: checkpoint.Checkpoint
    where: Location
    witnessed: bool


@dataclass
class _Walk:
    writer: str
    tree: merkle.CompactTree = field(default_factory=merkle.CompactTree)
    start: int = 0
    problem: Problem | None = None
    torn: Location | None = None
    end: Location | None = None
    blind: bool = False
    wanted: set[int] = field(default_factory=set)
    seen: dict[int, str] = field(default_factory=dict)
    anchors: list[tuple[chain.Anchor, Location]] = field(default_factory=list)


def verify_signed(
    directory: Path, keys: Mapping[str, ed25519.Ed25519PublicKey], *, witness_dir: Path | None = None,
    vault_witness: Sequence[tuple[str, checkpoint.Checkpoint | None]] = (),
) -> SignedReport:
    """Check every chain in ``directory`` against its signed checkpoints; never raises for
    tampering. ``keys`` are the trusted public keys by key id (see checkpoint.public_keys_from_pem);
    ``vault_witness`` the (writer, newest checkpoint) pairs read from Vault KV, if kept there."""
    directory = Path(directory)
    problems: list[Problem] = []
    trail_id = layout.read_trail_id_unverified(directory)
    if trail_id is None:
        problems.append(Problem(Location(layout.TRAIL_FILE, 1),
                                f"{layout.TRAIL_FILE} is missing or unreadable"))
        return _report(problems, [], 0, 0, {}, keys)
    claims, bad = _claims(directory, trail_id, keys, witness_dir, vault_witness)
    problems += bad
    listing = layout.list_chains(directory)
    anchored = _prescan_anchors(directory, listing)
    walks: list[_Walk] = []
    verified: dict[str, int] = {}
    tombstoned = _pruned_writers(directory)
    pruned: list[str] = []
    for writer in sorted(set(listing) | set(claims)):
        wanted = sorted(claims.get(writer, []), key=lambda c: c.cp.size)
        if writer not in listing and writer in tombstoned:
            pruned.append(writer)
            continue
        if writer not in listing:
            if wanted:
                top = wanted[-1]
                problems.append(Problem(top.where, f"chain {writer} is gone although a signed "
                                        f"checkpoint covers {top.cp.size} of its lines (deleted)"))
            continue
        walk = _Walk(writer, wanted=anchored.get(writer, set()))
        _walk_chain(directory, walk, listing[writer], wanted, trail_id)
        walks.append(walk)
        if walk.problem is not None:
            problems.append(walk.problem)
            continue
        problems += _beyond_end(walk, wanted)
        verified[writer] = max((c.cp.size for c in wanted if c.cp.size <= walk.tree.size), default=0)
    problems += _check_anchors(directory, walks, verified)
    n_claims = sum(len(v) for v in claims.values())
    n_witnessed = sum(1 for v in claims.values() for c in v if c.witnessed)
    report = _report(problems, walks, n_claims, n_witnessed, verified, keys)
    return replace(report, pruned=tuple(pruned))


def _report(problems: list[Problem], walks: list[_Walk], n: int, witnessed: int,
            verified: dict[str, int], keys: Mapping[str, ed25519.Ed25519PublicKey]) -> SignedReport:
    unsigned = tuple(
        Unsigned(w.writer, max(verified[w.writer], w.start), w.tree.size - max(verified[w.writer], w.start))
        for w in walks if w.writer in verified and w.tree.size > max(verified[w.writer], w.start)
    )
    return SignedReport(
        ok=not problems, first_bad=problems[0] if problems else None, problems=tuple(problems),
        chains=len(walks), lines=sum(w.tree.size - w.start for w in walks), checkpoints=n,
        witnessed=witnessed, unsigned=unsigned, torn=tuple(w.torn for w in walks if w.torn),
        key_ids=tuple(sorted(keys)), unchecked=tuple(w.writer for w in walks if w.blind),
    )


def _claims(
    directory: Path, trail_id: str, keys: Mapping[str, ed25519.Ed25519PublicKey],
    witness_dir: Path | None, vault: Sequence[tuple[str, checkpoint.Checkpoint | None]],
) -> tuple[dict[str, list[_Claim]], list[Problem]]:
    """Every well-signed checkpoint, by writer; a problem for each one that is not."""
    entries = [(w, True, witness.Entry(f"vault:{w}", 1, cp, None if cp else "malformed checkpoint"))
               for w, cp in vault]
    sources: list[tuple[str, Path, str, bool]] = [
        (w, witness.local_path(directory, w), witness.local_path(directory, w).name, False)
        for w in witness.local_writers(directory)
    ]
    if witness_dir is not None:
        sources += [
            (w, witness.witness_path(witness_dir, trail_id, w), f"witness:{trail_id}/{w}.jsonl", True)
            for w in witness.witness_writers(witness_dir, trail_id)
        ]
    claims: dict[str, list[_Claim]] = {}
    problems: list[Problem] = []
    entries += [(w, witnessed, e) for w, path, label, witnessed in sources
                for e in witness.read(path, label)]
    for writer, witnessed, entry in entries:
        where = Location(entry.file, entry.line, writer)
        cp = entry.checkpoint
        if cp is None:
            problems.append(Problem(where, entry.error or "malformed checkpoint"))
            continue
        reason = checkpoint.check_signature(cp, keys)
        if reason is None and cp.trail != trail_id:
            reason = f"checkpoint names trail {cp.trail}, not this trail {trail_id} (copied in)"
        if reason is None and cp.writer != writer:
            reason = f"checkpoint names writer {cp.writer}, not {writer} (moved between files)"
        if reason is not None:
            problems.append(Problem(where, reason))
            continue
        claims.setdefault(writer, []).append(_Claim(cp, where, witnessed))
    return claims, problems


def _walk_chain(
    directory: Path, walk: _Walk, segs: list[int], wanted: list[_Claim], trail_id: str,
) -> None:
    """Stream the chain's lines into its tree, checking each claim when its size is reached."""
    writer = walk.writer
    pending = iter(wanted)
    nxt = next(pending, None)
    if segs[0] != 0:
        resumed = resume(directory / layout.segment_name(writer, segs[0]))
        if resumed is None and not wanted:
            walk.blind = True  # pruned before checkpoints existed: nothing signed to check
            return
        if resumed is None:
            walk.problem = Problem(Location(layout.segment_name(writer, segs[0]), 1, writer),
                                   f"chain starts at segment {segs[0]} without a Merkle frontier "
                                   "(earlier segments deleted)")
            return
        walk.tree, walk.start = resumed, resumed.size
        while nxt is not None and nxt.cp.size <= walk.start:
            nxt = next(pending, None)  # covers pruned lines only: nothing left to compare
    seq = walk.tree.size
    last_good = walk.start
    sealed_final = False
    for i, seg in enumerate(segs):
        name = layout.segment_name(writer, seg)
        if seg != segs[0] + i:
            walk.problem = Problem(Location(layout.segment_name(writer, segs[0] + i), 1, writer, seq),
                                   f"segment {segs[0] + i} is missing: deleted from the middle")
            return
        if sealed_final:
            walk.problem = Problem(Location(name, 1, writer), "segment after a final seal")
            return
        is_last = i == len(segs) - 1
        sealed = False
        count = 0
        for n, raw, complete in _lines(directory / name):
            loc = Location(name, n, writer, seq)
            if not complete:
                if is_last:
                    walk.torn = loc
                    break
                walk.problem = Problem(loc, "line is not newline-terminated")
                return
            if sealed:
                walk.problem = Problem(loc, "record after the segment's seal (appended)")
                return
            reason, rec = _structure(raw, seq)
            if reason is None and rec is not None:
                reason = _check_kind(rec, n, writer=writer, seg=seg, trail_id=trail_id, count=count)
            if reason is not None or rec is None:
                walk.problem = Problem(loc, reason or "unreadable")
                return
            if rec.get("_kind") == chain.KIND_SEAL:
                sealed, sealed_final = True, rec.get("_final") is True
            if rec.get("_kind") is not None:
                try:
                    walk.anchors += [(a, loc) for a in chain.anchors_from_json(rec.get("_anchors"))]
                except ValueError as exc:
                    walk.problem = Problem(loc, str(exc))
                    return
            if seq in walk.wanted:
                walk.seen[seq] = str(rec.get("_mac"))
            walk.tree.append(merkle.leaf_hash(raw))
            walk.end = loc
            seq, count = seq + 1, count + 1
            while nxt is not None and nxt.cp.size == walk.tree.size:
                if walk.tree.root() != nxt.cp.root:
                    walk.problem = Problem(loc, (
                        f"lines {last_good}..{seq - 1} do not match the signed checkpoint "
                        f"({nxt.where.file}:{nxt.where.line}, size {nxt.cp.size}): a line was "
                        "edited, inserted, deleted or reordered, or the checkpoint was not "
                        "made over these records"))
                    return
                last_good = nxt.cp.size
                nxt = next(pending, None)
        if not sealed and not is_last:
            walk.problem = Problem(Location(name, (walk.end.line + 1) if walk.end else 1, writer, seq),
                                   "segment ends without its seal: records were cut off its end")
            return


def _beyond_end(walk: _Walk, wanted: list[_Claim]) -> list[Problem]:
    longest = max((c for c in wanted if c.cp.size > walk.tree.size), key=lambda c: c.cp.size, default=None)
    if longest is None:
        return []
    where = walk.torn or walk.end or Location(layout.segment_name(walk.writer, 0), 1, walk.writer)
    source = "the witness" if longest.witnessed else "its checkpoint file"
    return [Problem(where, (
        f"chain has {walk.tree.size} lines but a checkpoint in {source} ({longest.where.file}:"
        f"{longest.where.line}) signed {longest.cp.size}: lines were cut off the end, or the trail "
        "was rolled back to an earlier state"))]


def _check_anchors(directory: Path, walks: list[_Walk], verified: dict[str, int]) -> list[Problem]:
    """Each signed open or seal record names the other chains' heads as its writer saw them: a
    chain now shorter than that, or with another line there, was cut or rewritten since, even
    when its own checkpoints were cut with it."""
    by_writer = {w.writer: w for w in walks}
    pruned = _pruned_writers(directory)
    problems: list[Problem] = []
    for walk in walks:
        signed_upto = verified.get(walk.writer, 0)
        for anchor, where in walk.anchors:
            if where.seq is None or where.seq >= signed_upto:
                continue  # not under a signature: not evidence
            target = by_writer.get(anchor.writer)
            if target is None:
                if anchor.writer not in pruned:
                    problems.append(Problem(where, f"anchors chain {anchor.writer} at seq "
                                            f"{anchor.seq}, but that chain is gone (deleted)"))
                continue
            if target.problem or target.blind or anchor.seq < target.start:
                continue
            if anchor.seq >= target.tree.size:
                problems.append(Problem(target.end or where, (
                    f"lines cut off the end: writer {walk.writer} signed that this chain had seq "
                    f"{anchor.seq} (truncated, or rolled back with its checkpoints)")))
            elif target.seen.get(anchor.seq) != anchor.mac:
                problems.append(Problem(where, f"chain {anchor.writer} seq {anchor.seq} differs "
                                        f"from the line writer {walk.writer} anchored (rewritten)"))
    return problems


def _pruned_writers(directory: Path) -> set[str]:
    """Writers named in retention tombstones (read without the key: used only to excuse a
    chain pruned away entirely, never to pass a line)."""
    try:
        data = (directory / layout.TOMBSTONE_FILE).read_bytes()
    except OSError:
        return set()
    found = set()
    for raw in data.splitlines():
        try:
            writer = orjson.loads(raw).get("writer")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(writer, str):
            found.add(writer)
    return found


def _structure(raw: bytes, seq: int) -> tuple[str | None, dict[str, object] | None]:
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "not valid JSON (edited or damaged)", None
    if not isinstance(rec, dict):
        return "not a JSON object", None
    if chain.canonical(rec) != raw:
        return "not in canonical form (edited by hand)", None
    got = rec.get("_seq")
    if not isinstance(got, int) or not isinstance(rec.get("_mac"), str):
        return "missing _seq or _mac (not a chained record)", None
    if got != seq:
        what = "deleted or reordered" if got > seq else "inserted or reordered"
        return f"expected seq {seq}, found {got}: records {what}", None
    return None, rec


def resume(path: Path) -> merkle.CompactTree | None:
    """The tree as it stood before a kept segment, from its open record's ``_frontier``."""
    line = _first_line(path)
    try:
        rec = orjson.loads(line or b"")
        seq, frontier = rec["_seq"], rec["_frontier"]
        return merkle.CompactTree(seq, [bytes.fromhex(h) for h in frontier])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


__all__ = ["SignedReport", "Unsigned", "resume", "verify_signed"]
