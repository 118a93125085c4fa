"""The strict form parser and the canonical encoder against the standard library's own
percent-coding (urllib.parse), including their fast paths for text with nothing to decode."""

from __future__ import annotations

from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import BadRequest
from proxy.exchanges.base import encode_pairs, parse_pairs

_CONTROL = {chr(c) for c in range(0x20)} | {"\x7f"}
texts = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)


@given(st.lists(st.tuples(texts, texts), max_size=6, unique_by=lambda kv: kv[0]))
def test_parse_pairs_decodes_what_urllib_encodes(pairs: list[tuple[str, str]]) -> None:
    controls = any(set(k + v) & _CONTROL for k, v in pairs)
    for encode in (quote_plus, lambda t: quote(t, safe="")):
        raw = "&".join(f"{encode(k)}={encode(v)}" for k, v in pairs)
        if controls:
            with pytest.raises(BadRequest):
                parse_pairs(raw.encode("ascii"), "body")
            continue
        assert parse_pairs(raw.encode("ascii"), "body") == tuple(pairs)
        assert parse_pairs(raw, "body") == tuple(pairs)


@given(st.lists(st.tuples(texts, texts), max_size=6))
def test_encode_pairs_is_urllib_quote(pairs: list[tuple[str, str]]) -> None:
    try:
        expected = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
    except UnicodeEncodeError:  # a lone surrogate: no encoding exists either way
        return
    assert encode_pairs(pairs) == expected


@pytest.mark.parametrize("raw", [b"a=1\x01", b"a\x7f=1", b"a=%01", b"a=b%7F", "a=é", "é=1", b"a=%zz",
                                 b"a=%e9", b"a=1&a=2", b"=1", b"a"])
def test_refused_with_or_without_anything_to_decode(raw: bytes | str) -> None:
    with pytest.raises(BadRequest):
        parse_pairs(raw, "query")


def test_plain_text_is_kept_as_sent() -> None:
    assert parse_pairs(b"symbol=BTCUSDT&quantity=0.001&newClientOrderId=x-1_2.3~", "query") == (
        ("symbol", "BTCUSDT"), ("quantity", "0.001"), ("newClientOrderId", "x-1_2.3~"))
    assert parse_pairs(b"a=1+2&b=%2B", "query") == (("a", "1 2"), ("b", "+"))
