"""The policies' rate notation (proxy.policy.rate_notation), the grammar the limits library
defined: each answer below is the notation's meaning worked out by hand."""

from __future__ import annotations

import pytest

from proxy.policy.rate_notation import parse_rates


@pytest.mark.parametrize(("text", "rates"), [
    ("20/second", [(20, 1)]),
    ("20 per second", [(20, 1)]),
    ("5 per 10 seconds", [(5, 10)]),
    ("10/2 minutes", [(10, 120)]),
    ("3 PER Day", [(3, 86_400)]),
    ("1000/hour", [(1000, 3600)]),
    ("20/second; 1000/hour", [(20, 1), (1000, 3600)]),
    ("1/second,2/minute|3/hour", [(1, 1), (2, 60), (3, 3600)]),
    ("  7 / 0 seconds ", [(7, 1)]),     # a zero multiple means one, as in limits
    ("0/second", [(0, 1)]),             # parsed; the schema refuses it ("allows nothing")
    ("1/month", [(1, 30 * 86_400)]),    # parsed; the schema refuses windows over a day
])
def test_rates_in_the_notation(text: str, rates: list[tuple[int, int]]) -> None:
    assert parse_rates(text) == rates


@pytest.mark.parametrize("text", ["", "20", "20/sec", "20/secondss", "/second", "1.5/second",
                                  "1/second;", "20 second", "-1/second", "20/second; x"])
def test_what_is_not_a_rate(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rates(text)
