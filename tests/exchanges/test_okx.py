"""OKX v5 signing against ccxt 4.5.90 and an independent recomputation of the documented
formula, plus the catalogue, demo-trading header, intents and hostile canonicalisation.

OKX publishes the formula only, no output (SPECS.md "Test vectors"), so the oracles are ccxt
and the documented formula computed here with hmac.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from proxy.errors import BadRequest, EndpointForbidden
from proxy.exchanges.base import Credentials
from proxy.exchanges.okx import EXCHANGE, TESTNET, iso8601_ms
from proxy.model.request import Category, Inbound, Stamp
from proxy.model.sensitive import Secret

API_KEY = "6f1e3a4c-1111-2222-3333-444455556666"
SECRET = "0123456789ABCDEF0123456789ABCDEF"
PASSPHRASE = "Pass-phrase 1!"
TS = 1_607_418_537_715  # 2020-12-08T09:08:57.715Z, the docs' example timestamp


def creds() -> Credentials:
    return EXCHANGE.load_credentials({"api_key": Secret(API_KEY), "api_secret": Secret(SECRET),
                                      "passphrase": Secret(PASSPHRASE)}, 1)


def inbound(method: str, path: str, query: str = "", body: str = "",
            headers: tuple[tuple[str, str], ...] = ()) -> Inbound:
    hdrs = headers or ((("content-type", "application/json"),) if body else ())
    return Inbound(method, path, query.encode(), hdrs, body.encode())


def post(path: str, obj: Any) -> Inbound:
    return inbound("POST", path, body=json.dumps(obj, separators=(",", ":")))


def _ccxt(method: str, path: str, params: Any) -> dict[str, Any]:
    ex = ccxt.okx({"apiKey": API_KEY, "secret": SECRET, "password": PASSPHRASE})
    ex.nonce = lambda: TS
    return ex.sign(path, ["private"], method, params)  # type: ignore[no-any-return]


ORDER = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit",
         "sz": "0.01", "px": "50000", "clOrdId": "bot1"}
CASES: list[tuple[str, str, Any]] = [
    ("POST", "trade/order", ORDER),
    ("POST", "trade/order", {"instId": "ETH-USDT", "tdMode": "cash", "side": "buy",
                             "ordType": "market", "sz": "100", "clOrdId": "bot2"}),
    ("POST", "trade/batch-orders", [
        {**ORDER, "clOrdId": "b1"},
        {"instId": "BTC-USDT-SWAP", "tdMode": "cross", "side": "sell", "ordType": "market",
         "sz": "3", "clOrdId": "b2", "posSide": "net"},
    ]),
    # exactly what ccxt's create_order sends (via batch-orders), tgtCcy on a limit order included
    ("POST", "trade/batch-orders", [
        {"instId": "BTC-USDT", "side": "buy", "ordType": "limit", "sz": "0.01", "tdMode": "cash",
         "tgtCcy": "base_ccy", "px": "40000", "clOrdId": "bot1"}]),
    ("POST", "trade/cancel-order", {"instId": "BTC-USDT", "clOrdId": "bot1"}),
    ("POST", "trade/cancel-batch-orders", [{"instId": "BTC-USDT", "ordId": "123"},
                                           {"instId": "BTC-USDT", "clOrdId": "bot1"}]),
    ("GET", "trade/order", {"instId": "BTC-USDT", "clOrdId": "bot1"}),
    ("GET", "trade/orders-pending", {"instType": "SPOT"}),
    ("GET", "account/balance", {}),
    ("GET", "account/balance", {"ccy": "BTC,USDT"}),
]


@pytest.mark.parametrize(("method", "path", "params"), CASES)
def test_okx_request_through_proxy_is_byte_identical_to_ccxt(
    method: str, path: str, params: Any
) -> None:
    want = _ccxt(method, path, json.loads(json.dumps(params)))
    url = str(want["url"])
    target = url.split("www.okx.com", 1)[1]
    body = str(want["body"] or "")
    placeholders = [(k.lower(), "placeholder") for k in want["headers"] if k != "Content-Type"]
    bot_headers = (*placeholders, ("content-type", "application/json"))
    bot = inbound(method, f"/api/v5/{path}", query=target.partition("?")[2], body=body,
                  headers=bot_headers)
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds(), Stamp(TS), "www.okx.com")
    assert out.path_and_query == target
    assert out.body.decode() == body
    assert dict(out.headers) == want["headers"]


def test_okx_signature_follows_documented_formula() -> None:
    # OKX-DOC: sign = Base64(HmacSHA256(timestamp + 'GET' + '/api/v5/account/balance?ccy=BTC')).
    out = EXCHANGE.sign(EXCHANGE.prepare(inbound("GET", "/api/v5/account/balance", "ccy=BTC")),
                        creds(), Stamp(TS), "www.okx.com")
    message = b"2020-12-08T09:08:57.715ZGET/api/v5/account/balance?ccy=BTC"
    want = base64.b64encode(hmac.new(SECRET.encode(), message, hashlib.sha256).digest()).decode()
    headers = dict(out.headers)
    assert headers["OK-ACCESS-SIGN"] == want
    assert headers["OK-ACCESS-TIMESTAMP"] == "2020-12-08T09:08:57.715Z"
    assert headers["OK-ACCESS-PASSPHRASE"] == PASSPHRASE
    assert "Content-Type" not in headers


@pytest.mark.parametrize(("ms", "text"), [
    (0, "1970-01-01T00:00:00.000Z"), (1_700_000_000_001, "2023-11-14T22:13:20.001Z"),
])
def test_okx_timestamp_is_iso8601_with_milliseconds(ms: int, text: str) -> None:
    assert iso8601_ms(ms) == text


def test_okx_demo_trading_header_only_for_testnet() -> None:
    prepared = EXCHANGE.prepare(inbound("GET", "/api/v5/account/balance"))
    live = EXCHANGE.sign(prepared, creds(), Stamp(TS), "www.okx.com")
    demo = TESTNET.sign(prepared, creds(), Stamp(TS), "www.okx.com")
    assert "x-simulated-trading" not in dict(live.headers)
    assert dict(demo.headers)["x-simulated-trading"] == "1"
    assert EXCHANGE.base_url("live") == TESTNET.base_url("testnet") == "https://www.okx.com"


def test_okx_bot_headers_never_forwarded() -> None:
    bot = Inbound("GET", "/api/v5/account/balance", b"",
                  (("ok-access-key", "evil"), ("ok-access-sign", "x"),
                   ("x-simulated-trading", "1"), ("ok-access-passphrase", "guess")), b"")
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds(), Stamp(TS), "www.okx.com")
    assert {k for k, _ in out.headers} == {
        "OK-ACCESS-KEY", "OK-ACCESS-PASSPHRASE", "OK-ACCESS-TIMESTAMP", "OK-ACCESS-SIGN"}
    assert dict(out.headers)["OK-ACCESS-KEY"] == API_KEY


def test_okx_public_endpoint_is_unsigned() -> None:
    prepared = EXCHANGE.prepare(inbound("GET", "/api/v5/public/instruments", "instType=SPOT"))
    out = EXCHANGE.sign(prepared, creds(), Stamp(TS), "www.okx.com")
    assert out.headers == () and out.path_and_query == "/api/v5/public/instruments?instType=SPOT"


def test_okx_limit_order_intent() -> None:
    prepared = EXCHANGE.prepare(post("/api/v5/trade/order", ORDER))
    (intent,) = prepared.intents
    assert prepared.category is Category.TRADE
    assert (intent.symbol, intent.side, intent.order_type) == ("BTC-USDT", "buy", "limit")
    assert intent.quantity == Decimal("0.01") and intent.price == Decimal("50000")
    assert intent.notional == Decimal("500.00") and intent.client_order_id == "bot1"


@pytest.mark.parametrize(
    ("side", "tgt", "quote"),
    [("buy", None, True), ("sell", None, False), ("buy", "base_ccy", False),
     ("sell", "quote_ccy", True)],
)
def test_okx_spot_market_quantity_follows_tgt_ccy(side: str, tgt: str | None, quote: bool) -> None:
    order = {"instId": "BTC-USDT", "tdMode": "cash", "side": side, "ordType": "market",
             "sz": "100", **({"tgtCcy": tgt} if tgt else {})}
    (intent,) = EXCHANGE.prepare(post("/api/v5/trade/order", order)).intents
    if quote:
        assert intent.quote_quantity == Decimal("100") and intent.quantity is None
    else:
        assert intent.quantity == Decimal("100") and intent.quote_quantity is None


def test_okx_swap_market_buy_is_contracts() -> None:
    order = {"instId": "BTC-USDT-SWAP", "tdMode": "cross", "side": "buy", "ordType": "market",
             "sz": "2"}
    (intent,) = EXCHANGE.prepare(post("/api/v5/trade/order", order)).intents
    assert intent.quantity == Decimal("2") and intent.quote_quantity is None


def test_okx_batch_every_order_is_an_intent() -> None:
    prepared = EXCHANGE.prepare(post("/api/v5/trade/batch-orders", CASES[2][2]))
    assert [(i.symbol, i.side, i.client_order_id) for i in prepared.intents] == [
        ("BTC-USDT", "buy", "b1"), ("BTC-USDT-SWAP", "sell", "b2")]
    assert prepared.endpoint.batch and prepared.client_order_id is None


def test_okx_cancel_and_query_intents_carry_cl_ord_id() -> None:
    cancel = EXCHANGE.prepare(post("/api/v5/trade/cancel-order", CASES[4][2]))
    assert cancel.category is Category.CANCEL and cancel.client_order_id == "bot1"
    query = EXCHANGE.prepare(inbound("GET", "/api/v5/trade/order", "instId=BTC-USDT&clOrdId=q1"))
    assert query.category is Category.READ and query.client_order_id == "q1"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v5/asset/withdrawal"),
        ("POST", "/api/v5/asset/withdrawal-lightning"),
        ("POST", "/api/v5/asset/cancel-withdrawal"),
        ("POST", "/api/v5/asset/transfer"),
        ("POST", "/api/v5/asset/subaccount/transfer"),
        ("POST", "/api/v5/users/subaccount/set-transfer-out"),
        ("POST", "/api/v5/users/subaccount/apikey"),
        ("POST", "/api/v5/users/subaccount/modify-apikey"),
        ("POST", "/api/v5/users/subaccount/delete-apikey"),
        ("POST", "/api/v5/broker/nd/subaccount/apikey"),
        ("GET", "/api/v5/asset/deposit-address"),
        ("POST", "/api/v5/account/set-leverage"),
        ("POST", "/api/v5/trade/order-algo"),
        ("GET", "/api/v5/trade/batch-orders"),
    ],
)
def test_okx_dangerous_and_unknown_endpoints_forbidden(method: str, path: str) -> None:
    with pytest.raises(EndpointForbidden):
        EXCHANGE.prepare(inbound(method, path))


BASE = '"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"limit"'
OK = ',"sz":"1","px":"1"'


@pytest.mark.parametrize(
    ("path", "query", "body"),
    [
        ("trade/order", "", "{" + BASE + ',"sz":"1","px":"1","sz":"2"}'),
        ("trade/order", "sz=1", "{" + BASE + OK + "}"),
        ("trade/order", "", "{" + BASE + ',"sz":1,"px":"1"}'),
        ("trade/order", "", "{" + BASE + ',"sz":"1e3","px":"1"}'),
        ("trade/order", "", "{" + BASE + ',"sz":"Infinity","px":"1"}'),
        ("trade/order", "", "{" + BASE + ',"sz":"-1","px":"1"}'),
        ("trade/order", "", "{" + BASE + ',"sz":"1.","px":"1"}'),
        ("trade/order", "", "{" + BASE + ',"sz":"1"}'),
        ("trade/order", "", "{" + BASE + OK + ',"evil":"1"}'),
        ("trade/order", "", "{" + BASE + OK + ',"clOrdId":"has-dash"}'),
        ("trade/order", "", "{" + BASE + OK + ',"clOrdId":"' + "a" * 33 + '"}'),
        ("trade/order", "", "{" + BASE + OK + ',"tgtCcy":"quote_ccy"}'),
        ("trade/order", "", "{" + BASE + OK + ',"tgtCcy":"usd"}'),
        ("trade/order", "", "{" + BASE.replace("BTC-USDT", "BTC-USDT-SWAP") + OK
         + ',"tgtCcy":"base_ccy"}'),
        ("trade/order", "", "{" + BASE + OK + ',"attachAlgoOrds":[{"tpTriggerPx":"1"}]}'),
        ("trade/order", "", "{" + BASE.replace('"buy"', '"BUY"') + OK + "}"),
        ("trade/order", "", "{" + BASE.replace("BTC-USDT", "btc-usdt") + OK + "}"),
        ("trade/order", "", "{" + BASE.replace('"cash"', '"cross"').replace('"limit"', '"market"')
         + ',"sz":"1"}'),
        ("trade/order", "", '{"instId":"BTC-USDT","tdMode":"cash","side":"buy",'
                            '"ordType":"market","sz":"1","px":"5"}'),
        ("trade/order", "", "[{" + BASE + OK + "}]"),
        ("trade/batch-orders", "", "[]"),
        ("trade/batch-orders", "", "{" + BASE + OK + "}"),
        ("trade/batch-orders", "", "[" + ",".join(["{" + BASE + OK + "}"] * 21) + "]"),
        ("trade/cancel-order", "", '{"instId":"BTC-USDT"}'),
        ("trade/order/../order", "", "{}"),
        ("trade/%6Frder", "", "{}"),
        ("Trade/order", "", "{}"),
    ],
)
def test_okx_ambiguous_requests_are_bad_requests(path: str, query: str, body: str) -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("POST", f"/api/v5/{path}", query=query, body=body))


def test_okx_get_with_duplicate_or_body_refused() -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("GET", "/api/v5/trade/order", "instId=A-B&instId=C-D"))
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("GET", "/api/v5/trade/order", "instId=A-B", body="{}"))


def test_okx_credentials_need_passphrase_and_hide_secrets() -> None:
    with pytest.raises(ValueError, match="passphrase"):
        EXCHANGE.load_credentials({"api_key": Secret(API_KEY), "api_secret": Secret(SECRET)}, 1)
    text = repr(creds())
    assert SECRET not in text and PASSPHRASE not in text
