"""Inclusion proofs of single records against signed checkpoints (``audit prove``).

A proof is the record's line, its index, the RFC 9162 audit path and the checkpoint it leads
to; whoever holds the public key checks it with checkpoint.verify_proof, without the trail.
Only files are read: no key, no Vault.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import orjson

from proxy.audit import checkpoint, layout, merkle, witness
from proxy.audit.signed import resume
from proxy.audit.verify import _lines


def prove(
    directory: Path, request_id: str, *, witness_dir: Path | None = None,
) -> list[checkpoint.Proof]:
    """Inclusion proofs for every line with ``request_id`` (its decision and outcome), each
    against the newest checkpoint that covers it and matches the chain. Lines no checkpoint
    covers yet are left out (run it again after the next checkpoint)."""
    directory = Path(directory)
    trail_id = layout.read_trail_id_unverified(directory) or ""
    needle = orjson.dumps(request_id)
    proofs: list[checkpoint.Proof] = []
    for writer, segs in sorted(layout.list_chains(directory).items()):
        tree = merkle.CompactTree()
        if segs[0] != 0:  # older segments pruned: start from the kept one's frontier
            resumed = resume(directory / layout.segment_name(writer, segs[0]))
            if resumed is None:
                continue
            tree = resumed
        start, frontier = tree.size, tree.frontier
        found: list[tuple[int, bytes]] = []
        leaves: list[bytes] = []
        cps = _checkpoints_of(directory, trail_id, writer, witness_dir)
        sizes = {cp.size for cp in cps}
        roots: dict[int, bytes] = {}
        for seg in segs:
            for _, raw, complete in _lines(directory / layout.segment_name(writer, seg)):
                if not complete:
                    break
                if needle in raw:
                    rec = orjson.loads(raw)
                    if rec.get("request_id") == request_id:
                        found.append((start + len(leaves), raw))
                leaf = merkle.leaf_hash(raw)
                leaves.append(leaf)
                tree.append(leaf)
                if tree.size in sizes:
                    roots[tree.size] = tree.root()
        good = [cp for cp in cps if roots.get(cp.size) == cp.root]
        for index, raw in found:
            cover = [cp for cp in good if cp.size > index]
            if cover:
                proofs.append(checkpoint.make_proof(leaves, index, raw, cover[-1], start=start,
                                                    frontier=frontier))
    return proofs


def _checkpoints_of(
    directory: Path, trail_id: str, writer: str, witness_dir: Path | None,
) -> list[checkpoint.Checkpoint]:
    """The writer's checkpoints, local and witnessed, oldest first (signatures unchecked here:
    the proof's reader checks the one it gets)."""
    paths = [witness.local_path(directory, writer)]
    if witness_dir is not None:
        paths.append(witness.witness_path(witness_dir, trail_id, writer))
    seen: dict[bytes, checkpoint.Checkpoint] = {}
    for path in paths:
        for entry in witness.read(path):
            cp = entry.checkpoint
            if cp is not None and cp.writer == writer and cp.trail == trail_id:
                seen[hashlib.sha256(cp.line()).digest()] = cp
    return sorted(seen.values(), key=lambda cp: cp.size)


def iter_proof_lines(proofs: list[checkpoint.Proof]) -> Iterator[bytes]:
    for p in proofs:
        yield orjson.dumps(p.as_json(), option=orjson.OPT_SORT_KEYS)


__all__ = ["iter_proof_lines", "prove"]
