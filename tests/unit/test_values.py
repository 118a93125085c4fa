"""L0 values: strict decimals, the redacting Secret."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest

from proxy.errors import BadRequest
from proxy.model.decimals import parse_decimal
from proxy.model.sensitive import Secret


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
