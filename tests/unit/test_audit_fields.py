"""How a request's audit record writes its time and its order: against the standard library's
own datetime formatting and decimal strings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from proxy.model.request import Intent
from proxy.pipeline.decision import intent_fields, utc_stamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("ns", [0, 999, 1_000, 1_765_000_000_123_456_789, 1_765_000_000_999_999_999,
                                1_765_000_001_000_000_000, 1_709_164_800_000_000_000, 4_102_444_800_000_001_000])
def test_utc_stamp_is_isoformat_in_microseconds_with_z(ns: int) -> None:
    expected = (EPOCH + timedelta(microseconds=ns // 1000)).isoformat(timespec="microseconds")
    assert utc_stamp(ns) == expected.replace("+00:00", "Z")


def test_a_second_formatted_before_is_still_right_after_others() -> None:
    stamps = [utc_stamp(s * 1_000_000_000 + 5_000) for s in (10, 11, 12, 13, 14, 15, 10)]
    assert stamps[0] == stamps[-1] == "1970-01-01T00:00:10.000005Z"


def test_intent_fields_money_as_strings_absent_left_out() -> None:
    intent = Intent(symbol="BTCUSDT", side="buy", order_type="limit", quantity=Decimal("0.10"),
                    price=Decimal("50000.5"), client_order_id="x-1")
    assert intent_fields(intent) == {
        "symbol": "BTCUSDT", "side": "buy", "type": "limit", "quantity": "0.10", "price": "50000.5",
        "client_order_id": "x-1",
    } | ({"notional": str(intent.notional)} if intent.notional is not None else {})
    assert intent_fields(Intent(quote_quantity=Decimal("12"))) == {"quote_quantity": "12", "notional": "12"}
