"""Retention: delete old sealed segments without making verify cry "deleted".

Before a prefix of a chain is removed, a tombstone line MACed with the trail key goes into
``PRUNED.jsonl``: the writer, the first segment kept, and the seq and MAC of the last seal
removed. The kept segment's open record is chained to that MAC, so verify starts there as if the
removed segments were still present. Someone without the key can neither write a tombstone nor
remove one without verify noticing the gap it leaves.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from proxy.audit import chain, layout
from proxy.audit.verify import verify
from proxy.errors import AuditIntegrityError
from proxy.model.sensitive import Secret


@dataclass(frozen=True)
class PruneResult:
    removed: tuple[str, ...]
    tombstones: int


def prune(
    directory: Path,
    key: Secret,
    *,
    older_than_s: float,
    clock: Callable[[], float] = time.time,
    dry_run: bool = False,
) -> PruneResult:
    """Remove whole sealed segments last modified more than ``older_than_s`` ago.

    Only a chain's oldest run of sealed segments goes, never an open one, so every kept chain
    still starts at a tombstone. Refuses a trail that fails verify: pruning must never launder
    tampering into a tombstone. Run it from cron with the same key the writers use.
    ``dry_run`` reports what would go and changes nothing.
    """

    report = verify(directory, key)
    if not report.ok:
        raise AuditIntegrityError(f"refusing to prune a failing trail: {report.first_bad}")
    chain_key = chain.key_bytes(key)
    trail = layout.read_trail(directory, chain_key)
    tkey = chain.trail_key(chain_key, trail.trail_id)
    cutoff = clock() - older_than_s
    removed: list[str] = []
    written = 0
    for writer, segs in sorted(layout.list_chains(directory).items()):
        victims: list[int] = []
        last_seal: dict[str, Any] | None = None
        for seg in segs:
            path = directory / layout.segment_name(writer, seg)
            if path.stat().st_mtime >= cutoff:
                break
            seal = _seal_of(path)
            if seal is None:
                break
            victims.append(seg)
            last_seal = seal
            if seal.get("_final") is True:
                break
        if not victims or last_seal is None:
            continue
        if dry_run:
            removed += [layout.segment_name(writer, seg) for seg in victims]
            written += 1
            continue
        fields: dict[str, Any] = {
            "writer": writer, "upto": victims[-1] + 1, "seq": last_seal["_seq"],
            "mac": last_seal["_mac"], "whole": last_seal.get("_final") is True,
            "ts": chain.rfc3339(dt.datetime.fromtimestamp(clock(), dt.UTC)),
        }
        fields["_mac"] = chain.tombstone_mac(tkey, fields)
        _append_durably(directory / layout.TOMBSTONE_FILE, chain.canonical(fields) + b"\n")
        written += 1
        for seg in victims:
            name = layout.segment_name(writer, seg)
            (directory / name).unlink()
            removed.append(name)
    if removed and not dry_run:
        layout.fsync_dir(directory)
    return PruneResult(tuple(removed), written)


def _seal_of(path: Path) -> dict[str, Any] | None:
    line = layout.last_complete_line(path)
    if not line:
        return None
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) and rec.get("_kind") == chain.KIND_SEAL else None


def _append_durably(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, layout.FILE_MODE)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
