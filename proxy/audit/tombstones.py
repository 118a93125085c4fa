"""Tombstones: the MACed lines in ``PRUNED.jsonl`` that say which segments retention removed.

Read by verify (a chain may start at a tombstone) and written by retention; kept apart so
neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from proxy.audit import chain, layout


@dataclass(frozen=True)
class Tombstone:
    """Segments ``< upto`` of ``writer`` were pruned; the last of them sealed at ``seq``/``mac``."""

    writer: str
    upto: int
    seq: int
    mac: str
    whole: bool


@dataclass(frozen=True)
class TombstoneProblem:
    line: int
    reason: str


def read_tombstones(
    directory: Path, tkey: chain.MacKey
) -> tuple[dict[str, Tombstone], list[TombstoneProblem]]:
    """The newest valid tombstone per writer, and any line that fails its MAC."""
    path = directory / layout.TOMBSTONE_FILE
    found: dict[str, Tombstone] = {}
    problems: list[TombstoneProblem] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return found, problems
    for n, raw in enumerate(data.splitlines(), start=1):
        try:
            rec = orjson.loads(raw)
            mac = rec.pop("_mac")
            tomb = Tombstone(rec["writer"], rec["upto"], rec["seq"], rec["mac"], rec["whole"])
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            problems.append(TombstoneProblem(n, "tombstone is malformed"))
            continue
        if not (isinstance(mac, str) and chain.mac_equal(
                bytes.fromhex(chain.tombstone_mac(tkey, rec)), mac)):
            problems.append(TombstoneProblem(n, "tombstone MAC does not match (forged or edited)"))
            continue
        old = found.get(tomb.writer)
        if old is None or tomb.upto > old.upto:
            found[tomb.writer] = tomb
    return found, problems
