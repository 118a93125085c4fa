"""The pure core of the audit chain: canonical bytes, HMAC links, control records.

No I/O and no clock here, so every tamper rule can be tested on plain bytes. A line is the
canonical JSON of a record plus ``_seq`` and ``_mac``, where

    mac = HMAC-SHA256(trail_key, prev_mac || canonical(record with _seq, without _mac))

and ``trail_key = HMAC-SHA256(chain_key, "audit-chain-v1\\0" || trail_id)``. Binding the trail id
into the key makes a record copied in from another trail fail even when both trails share the
chain key in Vault.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn, final

import orjson

from proxy.errors import ChainKeyError
from proxy.model.sensitive import Secret

GENESIS_PREV = bytes(32)
"""The ``prev_mac`` of a writer's very first record."""

KIND_OPEN = "open"
KIND_SEAL = "seal"
RESERVED_PREFIX = "_"
"""Keys the chain owns (``_seq``, ``_mac``, ``_kind``...); caller records may not use them."""

_DOMAIN_TRAIL = b"audit-chain-v1\x00"
_DOMAIN_TRAIL_ID = b"audit-trail-id-v1\x00"
_DOMAIN_TOMBSTONE = b"audit-tombstone-v1\x00"



@final
class MacKey:
    """Raw HMAC key bytes that redact themselves in reprs and tracebacks with locals."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        return "MacKey('***')"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a MacKey cannot be pickled")


def key_bytes(key: Secret) -> MacKey:
    """Unwrap the 64-hex-character chain key from Vault into its 32 bytes."""
    text = key.reveal()
    if len(text) != 64:
        raise ChainKeyError("the audit chain key must be 64 hex characters (32 bytes)")
    try:
        return MacKey(bytes.fromhex(text))
    except ValueError:
        raise ChainKeyError("the audit chain key must be 64 hex characters (32 bytes)") from None


def trail_key(chain_key: MacKey, trail_id: str) -> MacKey:
    """The per-trail MAC key: a record MACed for one trail never verifies in another."""
    return MacKey(hmac.digest(chain_key.raw, _DOMAIN_TRAIL + trail_id.encode(), "sha256"))


def trail_id_mac(chain_key: MacKey, trail_id: str) -> str:
    """Proof in ``TRAIL.json`` that the trail id was written by a holder of the chain key."""
    return hmac.digest(chain_key.raw, _DOMAIN_TRAIL_ID + trail_id.encode(), "sha256").hex()


def tombstone_mac(tkey: MacKey, fields: Mapping[str, Any]) -> str:
    """MAC of one retention tombstone line (fields without ``_mac``)."""
    return hmac.digest(tkey.raw, _DOMAIN_TOMBSTONE + canonical(fields), "sha256").hex()


def _default(value: object) -> object:
    if isinstance(value, Secret):
        raise TypeError("refusing to write a Secret into the audit trail")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"cannot audit a value of type {type(value).__name__}")


def canonical(obj: Mapping[str, Any]) -> bytes:
    """Sorted keys, compact separators, UTF-8; Decimal as its string. Stable across processes."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_SORT_KEYS)


def link(tkey: MacKey, prev: bytes, body: bytes) -> bytes:
    """The 32-byte MAC that chains ``body`` to the record before it."""
    return hmac.digest(tkey.raw, prev + body, "sha256")


def seal_line(tkey: MacKey, prev: bytes, fields: dict[str, Any]) -> tuple[bytes, bytes]:
    """Chain ``fields`` (which carry ``_seq``) after ``prev``: the line with newline, its MAC."""
    mac = link(tkey, prev, canonical(fields))
    fields["_mac"] = mac.hex()
    try:
        line = canonical(fields)
    finally:
        del fields["_mac"]
    return line + b"\n", mac


@dataclass(frozen=True)
class Anchor:
    """Another chain's head as one writer saw it; ``closed`` marks a crashed chain's end."""

    writer: str
    seq: int
    mac: str
    closed: bool = False

    def as_json(self) -> list[Any]:
        return [self.seq, self.mac, self.closed]


def anchors_json(anchors: tuple[Anchor, ...]) -> dict[str, list[Any]]:
    return {a.writer: a.as_json() for a in anchors}


def anchors_from_json(raw: object) -> tuple[Anchor, ...]:
    """Parse ``_anchors``; malformed entries raise ValueError (the record is then bad)."""
    if not isinstance(raw, dict):
        raise ValueError("_anchors is not an object")
    out = []
    for writer, entry in raw.items():
        if not (isinstance(entry, list) and len(entry) == 3):
            raise ValueError("malformed anchor")
        seq, mac, closed = entry
        if not (isinstance(seq, int) and isinstance(mac, str) and isinstance(closed, bool)):
            raise ValueError("malformed anchor")
        out.append(Anchor(writer, seq, mac, closed))
    return tuple(out)


def open_fields(
    *, trail_id: str, writer: str, seg: int, seq: int, ts: str, anchors: tuple[Anchor, ...],
    frontier: tuple[bytes, ...] | None = None,
) -> dict[str, Any]:
    """First record of every segment: names trail, writer and segment so none can be swapped.

    After the first segment of a checkpointing writer it also carries ``_frontier``, the Merkle
    right edge of the lines before it (see merkle.CompactTree): once older segments are pruned,
    the public-key verify resumes the writer's tree from it, and the next signed checkpoint
    proves it right.
    """
    fields: dict[str, Any] = {
        "_kind": KIND_OPEN,
        "_trail": trail_id,
        "_writer": writer,
        "_seg": seg,
        "_seq": seq,
        "_anchors": anchors_json(anchors),
        "ts": ts,
    }
    if seg > 0 and frontier is not None:
        fields["_frontier"] = [h.hex() for h in frontier]
    return fields


def seal_fields(
    *, writer: str, seg: int, seq: int, records: int, final: bool, ts: str,
    anchors: tuple[Anchor, ...],
) -> dict[str, Any]:
    """Last record of a segment: its line count, and whether another segment follows."""
    return {
        "_kind": KIND_SEAL,
        "_writer": writer,
        "_seg": seg,
        "_seq": seq,
        "_records": records,
        "_final": final,
        "_anchors": anchors_json(anchors),
        "ts": ts,
    }


def rfc3339(when: dt.datetime) -> str:
    """UTC, microseconds, ``Z``: one fixed width so timestamps also sort as strings."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> dt.datetime:
    """Parse an RFC 3339 timestamp (``Z`` or offset); naive values are taken as UTC."""
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def mac_equal(a: bytes, b_hex: str) -> bool:
    """Constant-time comparison of a raw MAC with its hex form from a file."""
    return hmac.compare_digest(a.hex().encode(), b_hex.encode("ascii", "replace"))


__all__ = [
    "GENESIS_PREV",
    "KIND_OPEN",
    "KIND_SEAL",
    "Anchor",
    "ChainKeyError",
    "MacKey",
    "anchors_from_json",
    "canonical",
    "key_bytes",
    "link",
    "open_fields",
    "seal_fields",
    "seal_line",
    "trail_id_mac",
    "trail_key",
]
