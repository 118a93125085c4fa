"""Bitfinex v2 signing against the documented formula and ccxt 4.5.90, and canonicalisation.

Bitfinex publishes no fixed-output example (docs/exchanges.md "Test vectors"), so the formula is
recomputed here independently and ccxt serves as the byte-for-byte oracle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import ccxt
import pytest

from proxy.errors import BadRequest, EndpointForbidden
from proxy.exchanges.base import Credentials
from proxy.exchanges.bitfinex import EXCHANGE
from proxy.model.request import Category, Inbound, Stamp
from proxy.model.sensitive import Secret

KEY = "placeholder-bitfinex-key"
SECRET = "bfx-secret-0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
JSON = "application/json"
NONCE = 1_700_000_000_123_456


def creds() -> Credentials:
    return EXCHANGE.load_credentials({"api_key": Secret(KEY), "api_secret": Secret(SECRET)}, 1)


def inbound(path: str, body: str = "", method: str = "POST", query: str = "",
            headers: tuple[tuple[str, str], ...] = (), ctype: str = JSON) -> Inbound:
    hdrs = ((("content-type", ctype),) if body else ()) + headers
    return Inbound(method, path, query.encode(), hdrs, body.encode())


def sign(prepared, nonce: int = NONCE):  # type: ignore[no-untyped-def]
    return EXCHANGE.sign(prepared, creds(), Stamp(1, nonce), "api.bitfinex.com")


def test_bitfinex_signature_follows_documented_formula() -> None:
    out = sign(EXCHANGE.prepare(inbound("/v2/auth/r/wallets")))
    assert out.body == b"{}"  # the docs: an empty body is {}
    payload = f"/api/v2/auth/r/wallets{NONCE}{{}}".encode()
    expected = hmac.new(SECRET.encode(), payload, hashlib.sha384).hexdigest()
    headers = dict(out.headers)
    assert headers == {"Content-Type": JSON, "bfx-nonce": str(NONCE), "bfx-apikey": KEY,
                       "bfx-signature": expected}
    assert out.path_and_query == "/v2/auth/r/wallets"


def _ccxt(path: str, params: dict[str, Any], nonce: int) -> dict[str, Any]:
    ex = ccxt.bitfinex({"apiKey": KEY, "secret": SECRET})
    ex.incrementing_nonce = lambda: nonce
    return ex.sign(path, ["private"], "POST", params)  # type: ignore[no-any-return]


ORDER = {"symbol": "tBTCUSD", "amount": "0.01", "price": "50000", "type": "EXCHANGE LIMIT",
         "cid": 1700000000001}
CCXT_CASES: list[tuple[str, dict[str, Any]]] = [
    ("auth/w/order/submit", ORDER),
    ("auth/w/order/submit", {"symbol": "tETHUSD", "amount": "-1.5", "type": "EXCHANGE MARKET",
                             "cid": 42}),
    ("auth/w/order/submit", {"symbol": "tTESTBTC:TESTUSD", "amount": "-0.5", "price": "60000",
                             "type": "EXCHANGE LIMIT", "flags": 4096, "cid": 43}),
    ("auth/w/order/cancel", {"id": 123456789}),
    ("auth/w/order/cancel", {"cid": 1700000000001, "cid_date": "2026-07-01"}),
    ("auth/w/order/multi", {"ops": [["on", ORDER], ["on", {**ORDER, "amount": "-0.02",
                                                           "cid": 1700000000002}]]}),
    ("auth/w/order/cancel/multi", {"id": [1, 2, 3]}),
    ("auth/r/wallets", {}),
    ("auth/r/orders", {}),
    ("auth/r/orders", {"id": [123456789]}),
    ("auth/r/orders/{symbol}", {"symbol": "tBTCUSD", "id": [123456789]}),
    ("auth/r/orders/{symbol}/hist", {"symbol": "tBTCUSD"}),
]


@pytest.mark.parametrize(("path", "params"), CCXT_CASES)
def test_bitfinex_request_through_proxy_is_byte_identical_to_ccxt(
    path: str, params: dict[str, Any]
) -> None:
    """ccxt's request as a bot sends it (with its own nonce and auth headers) through prepare()
    and sign() with the same nonce gives exactly ccxt's URL path, body and signature."""
    sent_by_bot = _ccxt(path, dict(params), 1_600_000_000_000)
    want = _ccxt(path, dict(params), NONCE)
    url_path = urlsplit(want["url"]).path
    bot_headers = tuple((k.lower(), v) for k, v in sent_by_bot["headers"].items())
    bot = Inbound("POST", url_path, b"", bot_headers, sent_by_bot["body"].encode())
    out = sign(EXCHANGE.prepare(bot))
    assert out.path_and_query == url_path
    assert out.body.decode() == want["body"]
    assert dict(out.headers) == want["headers"]


def test_bitfinex_public_requests_match_ccxt_and_are_unsigned() -> None:
    ex = ccxt.bitfinex()
    labels = "pub:info:pair,pub:info:pair:futures,pub:list:pair:securities,pub:list:pair:margin"
    for path, params in (("conf/{config}", {"config": labels}),
                         ("tickers", {"symbols": "tBTCUSD,tETHUSD"}),
                         ("ticker/{symbol}", {"symbol": "tBTCUSD"})):
        want = urlsplit(ex.sign(path, ["public"], "GET", dict(params))["url"])
        prepared = EXCHANGE.prepare(inbound(want.path, method="GET", query=want.query))
        assert prepared.category is Category.PUBLIC
        out = sign(prepared)
        assert out.path_and_query == want.path + (f"?{want.query}" if want.query else "")
        assert out.headers == () and out.body == b""


def test_bitfinex_strips_bot_auth_headers() -> None:
    bot = inbound("/v2/auth/r/wallets", "{}", headers=(
        ("bfx-apikey", "attacker"), ("bfx-nonce", "99999999999999999"), ("bfx-signature", "x")))
    out = sign(EXCHANGE.prepare(bot), 7)
    assert dict(out.headers)["bfx-apikey"] == KEY and dict(out.headers)["bfx-nonce"] == "7"


def test_bitfinex_sell_intent_from_negative_amount() -> None:
    body = ('{"type":"EXCHANGE LIMIT","symbol":"tBTCUSD","amount":"-0.25","price":"60000",'
            '"cid":12345}')
    prepared = EXCHANGE.prepare(inbound("/v2/auth/w/order/submit", body))
    (intent,) = prepared.intents
    assert prepared.category is Category.TRADE
    assert intent.side == "sell" and intent.quantity == Decimal("0.25")
    assert intent.price == Decimal("60000") and intent.notional == Decimal("15000.00")
    assert intent.symbol == "tBTCUSD" and intent.order_type == "exchange limit"
    assert intent.client_order_id == "12345"
    assert prepared.body.decode() == body  # canonical JSON is what was sent


def test_bitfinex_market_buy_and_stop_limit_intents() -> None:
    market = '{"type":"EXCHANGE MARKET","symbol":"tETHUSD","amount":"2"}'
    (m,) = EXCHANGE.prepare(inbound("/v2/auth/w/order/submit", market)).intents
    assert m.side == "buy" and m.quantity == Decimal("2") and m.price is None
    stop = ('{"type":"EXCHANGE STOP LIMIT","symbol":"tETHUSD","amount":"-2","price":"2900",'
            '"price_aux_limit":"2850"}')
    (s,) = EXCHANGE.prepare(inbound("/v2/auth/w/order/submit", stop)).intents
    assert s.price == Decimal("2850") and s.side == "sell"


def test_bitfinex_batch_has_one_intent_per_order() -> None:
    body = ('{"ops":[["on",{"type":"EXCHANGE LIMIT","symbol":"tBTCUSD","amount":"1",'
            '"price":"10"}],["on",{"type":"EXCHANGE LIMIT","symbol":"tETHUSD","amount":"-2",'
            '"price":"20"}]]}')
    prepared = EXCHANGE.prepare(inbound("/v2/auth/w/order/multi", body))
    got = [(i.symbol, i.side) for i in prepared.intents]
    assert got == [("tBTCUSD", "buy"), ("tETHUSD", "sell")]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/auth/w/withdraw", "/v2/auth/w/ext/wallets/withdrawals/request", "/v2/auth/w/transfer",
        "/v2/auth/w/deposit/address", "/v2/auth/w/token", "/v2/auth/w/settings/set",
        "/v1/withdraw", "/v2/auth/w/order/update", "/v2/auth/w/unknown",
        "/v2/auth/r/movements/hist",
    ],
)
def test_bitfinex_dangerous_and_unknown_endpoints_forbidden(path: str) -> None:
    with pytest.raises(EndpointForbidden):
        EXCHANGE.prepare(inbound(path, '{"amount":"1"}'))


LIMIT = '{"type":"EXCHANGE LIMIT","symbol":"tBTCUSD","amount":"1","price":"10"'


@pytest.mark.parametrize(
    ("path", "body", "query"),
    [
        ("/v2/auth/w/order/submit", LIMIT + ',"amount":"2"}', ""),
        ("/v2/auth/w/order/submit", LIMIT.replace('"1"', "1") + "}", ""),
        ("/v2/auth/w/order/submit", LIMIT.replace('"1"', '"1e3"') + "}", ""),
        ("/v2/auth/w/order/submit", LIMIT.replace('"1"', '"0"') + "}", ""),
        ("/v2/auth/w/order/submit", LIMIT.replace('"1"', '"-0"') + "}", ""),
        ("/v2/auth/w/order/submit", LIMIT.replace('"1"', '"+1"') + "}", ""),
        ("/v2/auth/w/order/submit", LIMIT.replace('"1"', '"01"') + "}", ""),
        ("/v2/auth/w/order/submit", LIMIT.replace('"10"', '"-10"') + "}", ""),
        ("/v2/auth/w/order/submit", LIMIT.replace('"10"', '"NaN"') + "}", ""),
        ("/v2/auth/w/order/submit", LIMIT.replace("tBTCUSD", "BTCUSD") + "}", ""),
        ("/v2/auth/w/order/submit", LIMIT.replace("EXCHANGE LIMIT", "exchange limit") + "}", ""),
        ("/v2/auth/w/order/submit", LIMIT + ',"evil":1}', ""),
        ("/v2/auth/w/order/submit", LIMIT + ',"cid":35184372088832}', ""),
        ("/v2/auth/w/order/submit", LIMIT + ',"cid":"12"}', ""),
        ("/v2/auth/w/order/submit", LIMIT + ',"flags":2}', ""),
        ("/v2/auth/w/order/submit", LIMIT + ',"flags":16384}', ""),
        ("/v2/auth/w/order/submit", '{"type":"EXCHANGE MARKET","symbol":"tBTCUSD",'
                                    '"amount":"1","price":"5"}', ""),
        ("/v2/auth/w/order/submit", LIMIT + "}", "amount=2"),
        ("/v2/auth/w/order/submit", "not json", ""),
        ("/v2/auth/w/order/multi", '{"ops":[["oc",{"id":1}]]}', ""),
        ("/v2/auth/w/order/cancel", '{"cid":1,"cid_date":"2026-13-01"}', ""),
        ("/v2/auth/w/order/cancel", '{"id":1,"cid":2}', ""),
        ("/v2/auth/w/order/cancel/multi", '{"all":true}', ""),
        ("/v2/auth/r/orders/tBTC%55SD", "{}", ""),
        ("/v2/auth/r/orders/BTCUSD", "{}", ""),
        ("/v2/auth/R/wallets", "{}", ""),
        ("/v2/auth/r/../w/withdraw", "{}", ""),
        ("/v2/auth//r/wallets", "{}", ""),
    ],
)
def test_bitfinex_ambiguous_requests_are_bad_requests(path: str, body: str, query: str) -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound(path, body, query=query))


def test_bitfinex_wrong_content_type_is_bad_request() -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("/v2/auth/r/wallets", "{}", ctype="text/plain"))


def test_bitfinex_nonce_unit_is_a_field_with_us_default() -> None:
    assert EXCHANGE.nonce_unit == "us"
    assert dataclasses.replace(EXCHANGE, nonce_unit="ms").nonce_unit == "ms"
    with pytest.raises(ValueError):
        dataclasses.replace(EXCHANGE, nonce_unit=None)
    assert EXCHANGE.base_url("live") == "https://api.bitfinex.com"


def test_bitfinex_credentials_repr_hides_secret() -> None:
    c = creds()
    assert SECRET not in repr(c) and SECRET not in str(c)
