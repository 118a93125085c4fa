"""L0 values: strict decimals, the redacting Secret, order ids from exchange answers."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest

from proxy.errors import BadRequest
from proxy.model.decimals import parse_decimal
from proxy.model.sensitive import Secret
from proxy.pipeline.decision import exchange_order_id


@pytest.mark.parametrize("text", ["0", "1", "0.5", "50000", "0.00000001", "123.456"])
def test_decimal_accepts_plain(text: str) -> None:
    assert parse_decimal(text, "q") == Decimal(text)


@pytest.mark.parametrize(
    "text", ["", "1e3", "1E3", "NaN", "nan", "Infinity", "-1", "+1", "01", "1.", ".5", " 1", "1 ",
             "0x10", "１", "1,5", "1_000", "0.1234567890123456789"],
)
def test_decimal_refuses_ambiguous(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_decimal(text, "q")


def test_secret_never_shows_its_value() -> None:
    s = Secret("CANARY-value")
    rendered_forms = (repr(s), str(s), f"{s}", f"{s!r}", "%s" % (s,), repr([s]), repr({"k": s}))  # noqa: UP031
    for rendered in rendered_forms:
        assert "CANARY" not in rendered
    assert s.reveal() == "CANARY-value"
    with pytest.raises(TypeError):
        pickle.dumps(s)


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b'{"orderId": 123}', "123"), (b'{"result": {"orderId": "b1"}}', "b1"),
     (b'{"data": [{"ordId": "o1"}]}', "o1"), (b'{"result": {"txid": ["OX1"]}}', "OX1"),
     (b'{"success_response": {"order_id": "c1"}}', "c1"), (b"not json", None), (b'{"x": 1}', None)],
)
def test_exchange_order_id_from_common_shapes(body: bytes, expected: str | None) -> None:
    assert exchange_order_id(body) == expected
