"""The pure chain core: canonical bytes, links, keys."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal

import pytest

from proxy.audit import chain
from proxy.errors import ChainKeyError
from proxy.model.sensitive import Secret


def test_canonical_sorts_keys_compact_utf8() -> None:
    got = chain.canonical({"b": 1, "a": {"z": "é", "y": Decimal("0.10")}})
    assert got == '{"a":{"y":"0.10","z":"é"},"b":1}'.encode()


def test_canonical_refuses_secret_values() -> None:
    with pytest.raises(TypeError, match="Secret"):
        chain.canonical({"x": Secret("abc")})


def test_link_is_hmac_sha256_of_prev_then_body() -> None:
    key, prev, body = b"k" * 32, b"p" * 32, b'{"a":1}'
    expected = hmac.new(key, prev + body, hashlib.sha256).digest()
    assert chain.link(chain.MacKey(key), prev, body) == expected


def test_seal_line_round_trips_to_the_same_mac() -> None:
    tkey = chain.trail_key(chain.MacKey(b"k" * 32), "trail-1")
    fields = {"_seq": 3, "a": 1}
    line, mac = chain.seal_line(tkey, chain.GENESIS_PREV, fields)
    assert line.endswith(b"\n") and b"_mac" in line and "_mac" not in fields
    assert chain.link(tkey, chain.GENESIS_PREV, chain.canonical(fields)) == mac


def test_trail_key_differs_per_trail() -> None:
    key = chain.MacKey(b"k" * 32)
    assert chain.trail_key(key, "a").raw != chain.trail_key(key, "b").raw


def test_key_bytes_rejects_malformed_keys_without_echoing_them() -> None:
    for bad in ("zz" * 32, "ab" * 31, ""):
        with pytest.raises(ChainKeyError) as info:
            chain.key_bytes(Secret(bad))
        assert bad not in str(info.value) or not bad
    mac_key = chain.key_bytes(Secret("00" * 32))
    assert mac_key.raw == bytes(32) and "00" not in repr(mac_key)


def test_anchors_round_trip_and_reject_malformed() -> None:
    anchors = (chain.Anchor("w2", 5, "ab", closed=True),)
    assert chain.anchors_from_json(chain.anchors_json(anchors)) == anchors
    with pytest.raises(ValueError, match="anchor"):
        chain.anchors_from_json({"w": [1, 2]})
