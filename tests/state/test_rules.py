"""The pure rules both backends share."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proxy.state.rules import (
    IdemRecord,
    decide_begin,
    next_nonce_value,
    nonce_from_clock,
    scale_amount,
    unscale_amount,
)


def test_next_nonce_value_is_max_of_clock_and_last_plus_one() -> None:
    assert next_nonce_value(None, 5) == 5
    assert next_nonce_value(4, 5) == 5
    assert next_nonce_value(5, 5) == 6
    assert next_nonce_value(9, 5) == 10


def test_nonce_from_clock_units() -> None:
    assert nonce_from_clock(1_234_567_890, "s") == 1234
    assert nonce_from_clock(1_234_567_890, "ms") == 1_234_567
    assert nonce_from_clock(1_234_567_890, "us") == 1_234_567_890
    assert nonce_from_clock(1_234_567_890, "ns") == 1_234_567_890_000


@pytest.mark.parametrize(
    "text", ["0", "1", "0.1", "25000", "1E+3", "0.000000000000000001", "1.50", "9" * 40]
)
def test_scale_amount_round_trips_exactly(text: str) -> None:
    assert unscale_amount(scale_amount(Decimal(text))) == Decimal(text)


def test_scale_amount_refuses_what_it_cannot_hold_exactly() -> None:
    with pytest.raises(ValueError):
        scale_amount(Decimal("0.0000000000000000001"))
    with pytest.raises(ValueError):
        scale_amount(Decimal("-0.1"))
    with pytest.raises(TypeError):
        scale_amount(0.1)  # type: ignore[arg-type]
    assert scale_amount(Decimal("1.0000000000000000000000")) == 10**18


def test_decide_begin_covers_every_state() -> None:
    live = IdemRecord("h", "inflight", "t", lease_until_us=100, expires_us=200)
    done = IdemRecord("h", "done", "t", lease_until_us=100, expires_us=200)
    assert decide_begin(None, "h", 50) == "new"
    assert decide_begin(live, "x", 50) == "conflict"
    assert decide_begin(live, "h", 50) == "inflight"
    assert decide_begin(live, "h", 100) == "takeover"
    assert decide_begin(done, "h", 150) == "replay"
    assert decide_begin(done, "h", 200) == "new"
