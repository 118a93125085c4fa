"""The previous-key fallback (issue 14, case 8): which exchange answers mean "this key or its
signature is refused" (the codes ccxt maps to AuthenticationError), and the fallback's states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from proxy import exchanges
from proxy.exchanges.base import Credentials
from proxy.guards.key_fallback import KeyFallbacks, key_refused
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey


@pytest.mark.parametrize(("exchange", "status", "body"), [
    ("binance", 401, b'{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'),
    ("binance", 400, b'{"code":-1022,"msg":"Signature for this request is not valid."}'),
    ("bybit", 200, b'{"retCode":10003,"retMsg":"API key is invalid."}'),
    ("bybit", 200, b'{"retCode":10004,"retMsg":"error sign!"}'),
    ("okx", 401, b'{"code":"50111","msg":"Invalid OK-ACCESS-KEY"}'),
    ("okx", 400, b'{"code":"50113","msg":"Invalid Sign"}'),
    ("bitget", 400, b'{"code":"40037","msg":"Apikey does not exist"}'),
    ("bitstamp", 403, b'{"status":"error","reason":"Invalid signature","code":"API0005"}'),
    ("bitfinex", 500, b'["error",10100,"apikey: invalid"]'),
    ("kraken", 200, b'{"error":["EAPI:Invalid key"]}'),
    ("deribit", 400, b'{"jsonrpc":"2.0","error":{"message":"invalid_credentials","code":13004}}'),
    ("coinbase", 401, b"Unauthorized"),
    # escaped, or not UTF-8: the code is not in the bytes as written, and is still recognised
    ("okx", 400, b'{"code":"5011\\u0033","msg":"Invalid Sign"}'),
    ("kraken", 200, b'{"error":["EAPI:Invalid\\u0020key"]}'),
    ("okx", 400, '{"code":"50113"}'.encode("utf-16")),
])
def test_refusals_of_the_key_are_recognised(exchange: str, status: int, body: bytes) -> None:
    assert key_refused(exchanges.get(exchange).capabilities.key_refusal_codes, status, body)


@pytest.mark.parametrize(("exchange", "status", "body"), [
    ("binance", 400, b'{"code":-2010,"msg":"Account has insufficient balance for requested action."}'),
    ("binance", 200, b'{"orderId":1}'),
    ("kraken", 200, b'{"error":["EOrder:Insufficient funds"]}'),
    ("kraken", 200, b'{"error":[],"result":{}}'),
    ("okx", 200, b'{"code":"0","data":[]}'),
    ("bitfinex", 500, b'["error",10001,"price: invalid"]'),
    ("deribit", 429, b"too many"),
    ("okx", 400, b'{"code":"50112","msg":"50113 is not this answer\'s code"}'),
    ("bitget", 400, b'{"code":"40036","msg":"\\u0034"}'),
])
def test_other_answers_are_not_taken_for_a_refused_key(exchange: str, status: int, body: bytes) -> None:
    assert not key_refused(exchanges.get(exchange).capabilities.key_refusal_codes, status, body)


def _creds(version: int) -> Credentials:
    return Credentials(api_key=f"k{version}", key=HmacKey(Secret("s" * 64)), version=version)


@dataclass
class _Acct:
    name: str
    creds: Credentials | None
    previous: Credentials | None
    pool: Any = None


def test_the_previous_version_signs_until_a_newer_one_or_the_end_of_the_grace() -> None:
    now = [100.0]
    fallbacks = KeyFallbacks(60, clock=lambda: now[0])
    acct = _Acct("a", _creds(2), _creds(1))
    assert fallbacks.signing(acct) is acct.creds
    fallbacks.refused(acct, 1, "old version refused")  # not the newest: nothing happens
    assert fallbacks.signing(acct) is acct.creds
    fallbacks.refused(acct, 2, "HTTP 401")
    assert fallbacks.signing(acct) is acct.previous
    assert "refused key version 2 (HTTP 401); signing with version 1" in fallbacks.detail()["a"]
    now[0] += 61  # the grace is over: the newest version again
    assert fallbacks.signing(acct) is acct.creds and fallbacks.detail() == {}
    fallbacks.refused(acct, 2, "HTTP 401")
    acct.previous, acct.creds = acct.creds, _creds(3)  # keys rollback / a new rotation
    assert fallbacks.signing(acct) is acct.creds and fallbacks.detail() == {}


def test_no_fallback_without_a_previous_version_or_for_a_key_pool() -> None:
    fallbacks = KeyFallbacks(60)
    single = _Acct("a", _creds(1), None)
    fallbacks.refused(single, 1, "HTTP 401")
    pooled = _Acct("b", _creds(2), _creds(1), pool=object())
    fallbacks.refused(pooled, 2, "HTTP 401")
    assert fallbacks.detail() == {}
    assert fallbacks.signing(single) is single.creds and fallbacks.signing(pooled) is pooled.creds
