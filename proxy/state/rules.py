"""Pure rules shared by both backends: nonce arithmetic, amount scaling, begin() decisions.

No I/O and no clock: the time is always an argument. The redis backend re-states the same rules
in Lua (it must decide atomically inside the server); the shared tests keep the two in step.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from proxy.errors import NonceUnitChanged
from proxy.state.base import NONCE_UNITS, NonceUnit

AMOUNT_SCALE = 18
"""Window amounts are stored as integers of 10**-18 units: exact, no floats anywhere."""

_UNIT_FROM_US: dict[str, tuple[int, int]] = {
    "s": (1, 1_000_000),
    "ms": (1, 1_000),
    "us": (1, 1),
    "ns": (1_000, 1),
}


def nonce_from_clock(now_us: int, unit: NonceUnit) -> int:
    """The clock in the exchange's nonce unit (integer arithmetic only)."""
    if unit not in _UNIT_FROM_US:
        raise ValueError(f"nonce unit must be one of {NONCE_UNITS}, not {unit!r}")
    mul, div = _UNIT_FROM_US[unit]
    return now_us * mul // div


def next_nonce_value(last: int | None, candidate: int) -> int:
    """max(now, last + 1): strictly increasing even when the clock stalls or steps back."""
    return candidate if last is None or candidate > last else last + 1


def check_unit(key_id: str, recorded: str | None, unit: NonceUnit) -> None:
    """Refuse a unit change for a key that has signed before (the exchange would see a jump
    or, worse, a step back)."""
    if recorded is not None and recorded != unit:
        raise NonceUnitChanged(
            f"nonce unit for key {key_id!r} is {recorded!r} and it has signed before; refusing "
            f"{unit!r}. Keep the unit, or create a new API key on the exchange for the new unit"
        )


NONCE_KEY_FINGERPRINT_HEX = 32
"""128 bits of SHA-256: collisions between a store's keys are out of reach."""


@functools.lru_cache(maxsize=4096)
def nonce_key_fingerprint(key_id: str) -> str:
    """What a decision record names a nonce key by (``nonce_key``): a truncated SHA-256 of the
    key id (``exchange:api_key``), so the trail never carries the API key itself, and the
    sqlite store's ``nonce_keys`` table maps it back for the start-up replay
    (proxy.state.journal)."""
    return hashlib.sha256(key_id.encode()).hexdigest()[:NONCE_KEY_FINGERPRINT_HEX]


def to_us(seconds: float) -> int:
    """A duration in whole microseconds (rounded up, so a TTL is never shortened)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite number of seconds >= 0, not {seconds!r}")
    return math.ceil(seconds * 1_000_000)


def scale_amount(amount: Decimal | int) -> int:
    """An amount as an exact integer of 10**-18 units; refuses negatives, NaN, infinities and
    more than 18 decimals rather than rounding them."""
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise TypeError("amount must be a Decimal or an int, never a float")
    d = Decimal(amount)
    if not d.is_finite() or d < 0:
        raise ValueError(f"amount must be a finite number >= 0, not {amount!r}")
    _, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    kept = list(digits)
    while exponent < -AMOUNT_SCALE and len(kept) > 1 and kept[-1] == 0:
        kept.pop()  # trailing zeros carry no value; strip them exactly (no context rounding)
        exponent += 1
    if exponent < -AMOUNT_SCALE:
        if any(kept):
            raise ValueError(f"amount has more than {AMOUNT_SCALE} decimals: {amount}")
        return 0
    value = int("".join(str(k) for k in kept))
    shift: int = exponent + AMOUNT_SCALE  # >= 0 here
    return value * int("1" + "0" * shift)


def unscale_amount(scaled: int) -> Decimal:
    """The exact Decimal for a scaled integer, without trailing fractional zeros."""
    if scaled < 0:
        raise ValueError("scaled amount must be >= 0")
    text = str(scaled).rjust(AMOUNT_SCALE + 1, "0")
    whole, frac = text[:-AMOUNT_SCALE], text[-AMOUNT_SCALE:].rstrip("0")
    return Decimal(f"{whole}.{frac}" if frac else whole)


@dataclass(frozen=True, slots=True)
class IdemRecord:
    """One stored client-order-id claim, as both backends keep it."""

    content_hash: str
    state: Literal["inflight", "done"]
    token: str
    lease_until_us: int
    expires_us: int


BeginDecision = Literal["new", "conflict", "replay", "inflight", "takeover"]


def decide_begin(record: IdemRecord | None, content_hash: str, now_us: int) -> BeginDecision:
    """What ``begin`` does with the stored record (None: no record).

    new: no live record, claim it. conflict: same id, other content. replay: done, same
    content. inflight: a live owner holds it. takeover: the owner's lease expired without an
    answer, claim it and report the previous outcome as unknown.
    """
    if record is None or record.expires_us <= now_us:
        return "new"
    if record.content_hash != content_hash:
        return "conflict"
    if record.state == "done":
        return "replay"
    if record.lease_until_us > now_us:
        return "inflight"
    return "takeover"
