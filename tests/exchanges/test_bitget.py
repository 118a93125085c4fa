"""Bitget v2 signing against the docs' example string and ccxt 4.5.90, and canonicalisation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from proxy.errors import BadRequest, EndpointForbidden
from proxy.exchanges.bitget import EXCHANGE, PAPER_TRADING, prehash
from proxy.model.request import Category, Inbound, Stamp
from proxy.model.sensitive import Secret

KEY = "bg_0123456789abcdef0123456789abcdef"
SECRET = "5f0c0d3e4a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d"
PASSPHRASE = "Tr4dingPass"
TS = 1_700_000_000_123
HOST = "api.bitget.com"


def creds(secret: str = SECRET):  # type: ignore[no-untyped-def]
    fields = {"api_key": Secret(KEY), "api_secret": Secret(secret),
              "passphrase": Secret(PASSPHRASE)}
    return EXCHANGE.load_credentials(fields, 1)


def inbound(method: str, path: str, query: str = "", body: str = "", ctype: str = "") -> Inbound:
    headers = (("content-type", ctype or "application/json"),) if body else ()
    return Inbound(method, path, query.encode(), headers, body.encode())


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_bitget_docs_example_prehash_string() -> None:
    # BG-DOC §Signature: "16273667805456GET/api/mix/v2/market/depth?limit=20&symbol=BTCUSDT",
    # built from a query given in the other order (the docs require ascending keys).
    prepared = EXCHANGE.prepare(inbound("GET", "/api/v2/spot/market/orderbook",
                                        query="symbol=BTCUSDT&limit=20"))
    assert prepared.query == "limit=20&symbol=BTCUSDT"
    assert prehash("16273667805456", "GET", "/api/mix/v2/market/depth", prepared.query, b"") == (
        b"16273667805456GET/api/mix/v2/market/depth?limit=20&symbol=BTCUSDT"
    )


def _ccxt(method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
    ex = ccxt.bitget({"apiKey": KEY, "secret": SECRET, "password": PASSPHRASE})
    ex.nonce = lambda: TS
    return ex.sign(path, ["private", "spot"], method, params)  # type: ignore[no-any-return]


LIMIT = {"symbol": "BTCUSDT", "side": "buy", "orderType": "limit", "force": "gtc",
         "price": "50000", "size": "0.01", "clientOid": "bot-1"}
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "v2/spot/trade/place-order", LIMIT),
    ("POST", "v2/spot/trade/place-order", {"symbol": "ETHUSDT", "side": "buy",
                                           "orderType": "market", "size": "100",
                                           "clientOid": "quote-buy-1"}),
    ("POST", "v2/spot/trade/place-order", {"symbol": "ETHUSDT", "side": "sell",
                                           "orderType": "market", "size": "0.5",
                                           "clientOid": "base-sell-1"}),
    ("POST", "v2/spot/trade/batch-orders", {"symbol": "BTCUSDT", "orderList": [
        {**LIMIT, "clientOid": "b-1"}, {**LIMIT, "side": "sell", "price": "60000",
                                        "clientOid": "b-2"}]}),
    ("POST", "v2/spot/trade/cancel-order", {"symbol": "BTCUSDT", "clientOid": "bot-1"}),
    ("POST", "v2/spot/trade/batch-cancel-order", {"symbol": "BTCUSDT", "orderList": [
        {"orderId": "1001"}, {"orderId": "1002"}]}),
    ("GET", "v2/spot/trade/orderInfo", {"symbol": "BTCUSDT", "clientOid": "a+b#c_d-1"}),
    ("GET", "v2/spot/trade/unfilled-orders", {"symbol": "BTCUSDT", "limit": "100"}),
    ("GET", "v2/spot/account/assets", {}),
]


@pytest.mark.parametrize(("method", "path", "params"), CASES)
def test_bitget_request_through_proxy_is_byte_identical_to_ccxt(
    method: str, path: str, params: dict[str, Any]
) -> None:
    want = _ccxt(method, path, json.loads(json.dumps(params)))
    url = str(want["url"]).removeprefix(f"https://{HOST}")
    wire_path, _, query = url.partition("?")
    body = str(want["body"] or "")
    # The bot sends exactly what ccxt would (its auth headers are never copied).
    bot_headers = (("access-key", "placeholder"), ("access-sign", "x"),
                   ("x-channel-api-code", "p4sve"))
    bot = Inbound(method, wire_path, query.encode(),
                  (*bot_headers, *((("content-type", "application/json"),) if body else ())),
                  body.encode())
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds(), Stamp(TS), HOST)
    assert out.path_and_query == url
    assert out.body.decode() == body
    got = dict(out.headers)
    for name in ("ACCESS-KEY", "ACCESS-SIGN", "ACCESS-TIMESTAMP", "ACCESS-PASSPHRASE"):
        assert got[name] == want["headers"][name], name
    assert "X-CHANNEL-API-CODE" not in got  # ccxt's broker code is not the bot's to send
    assert set(got) <= {"ACCESS-KEY", "ACCESS-SIGN", "ACCESS-TIMESTAMP", "ACCESS-PASSPHRASE",
                        "Content-Type"}


def test_bitget_rsa_signature_verifies_with_public_key() -> None:
    pem = _rsa_pem()
    bot = inbound("GET", "/api/v2/spot/trade/orderInfo", query="symbol=BTCUSDT&clientOid=a%2Bb")
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds(pem), Stamp(TS), HOST)
    assert out.path_and_query == "/api/v2/spot/trade/orderInfo?clientOid=a%2Bb&symbol=BTCUSDT"
    # Independent construction of the documented string: decoded, sorted query.
    expected = f"{TS}GET/api/v2/spot/trade/orderInfo?clientOid=a+b&symbol=BTCUSDT".encode()
    public = serialization.load_pem_private_key(pem.encode(), None).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    sig = base64.b64decode(dict(out.headers)["ACCESS-SIGN"])
    public.verify(sig, expected, padding.PKCS1v15(), hashes.SHA256())


def test_bitget_hmac_post_signature_matches_independent_hmac() -> None:
    body = json.dumps(LIMIT, separators=(",", ":"))
    out = EXCHANGE.sign(EXCHANGE.prepare(inbound("POST", "/api/v2/spot/trade/place-order",
                                                 body=body)), creds(), Stamp(TS), HOST)
    msg = f"{TS}POST/api/v2/spot/trade/place-order{body}".encode()
    want = base64.b64encode(hmac.new(SECRET.encode(), msg, hashlib.sha256).digest()).decode()
    assert dict(out.headers)["ACCESS-SIGN"] == want
    assert dict(out.headers)["Content-Type"] == "application/json"


def test_bitget_ed25519_keys_refused() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ValueError, match="HMAC secrets or RSA"):
        creds(pem)


def test_bitget_passphrase_required() -> None:
    with pytest.raises(ValueError, match="passphrase"):
        EXCHANGE.load_credentials({"api_key": Secret(KEY), "api_secret": Secret(SECRET)}, 1)


def test_bitget_credentials_repr_hides_secret_and_passphrase() -> None:
    c = creds()
    assert SECRET not in repr(c) and PASSPHRASE not in repr(c)
    out = EXCHANGE.sign(EXCHANGE.prepare(inbound("GET", "/api/v2/spot/account/assets")), c,
                        Stamp(TS), HOST)
    assert PASSPHRASE not in repr(out)


def test_bitget_public_requests_go_unsigned() -> None:
    prepared = EXCHANGE.prepare(inbound("GET", "/api/v2/spot/public/symbols"))
    assert prepared.category is Category.PUBLIC
    out = EXCHANGE.sign(prepared, creds(), Stamp(TS), HOST)
    assert out.headers == ()


def test_bitget_paper_trading_adds_demo_header() -> None:
    out = PAPER_TRADING.sign(EXCHANGE.prepare(inbound("GET", "/api/v2/spot/account/assets")),
                             creds(), Stamp(TS), HOST)
    assert ("PAPTRADING", "1") in out.headers


def test_bitget_limit_intent() -> None:
    prepared = EXCHANGE.prepare(inbound("POST", "/api/v2/spot/trade/place-order",
                                        body=json.dumps(LIMIT)))
    (intent,) = prepared.intents
    assert prepared.category is Category.TRADE
    assert (intent.symbol, intent.side, intent.order_type, intent.time_in_force) == (
        "BTCUSDT", "buy", "limit", "gtc")
    assert intent.quantity == Decimal("0.01") and intent.price == Decimal("50000")
    assert intent.notional == Decimal("500.00") and intent.client_order_id == "bot-1"
    assert prepared.client_order_id == "bot-1"


def test_bitget_market_buy_size_is_quote_and_market_sell_is_base() -> None:
    buy = {"symbol": "ETHUSDT", "side": "buy", "orderType": "market", "size": "250"}
    (intent,) = EXCHANGE.prepare(inbound("POST", "/api/v2/spot/trade/place-order",
                                         body=json.dumps(buy))).intents
    assert intent.quote_quantity == Decimal("250") and intent.quantity is None
    assert intent.notional == Decimal("250")
    sell = {**buy, "side": "sell", "size": "0.5"}
    (intent,) = EXCHANGE.prepare(inbound("POST", "/api/v2/spot/trade/place-order",
                                         body=json.dumps(sell))).intents
    assert intent.quantity == Decimal("0.5") and intent.quote_quantity is None
    assert intent.notional is None  # needs a reference price


def test_bitget_batch_every_order_is_an_intent() -> None:
    body = {"symbol": "BTCUSDT", "orderList": [
        {**LIMIT, "clientOid": "b-1"}, {**LIMIT, "size": "2", "clientOid": "b-2"}]}
    prepared = EXCHANGE.prepare(inbound("POST", "/api/v2/spot/trade/batch-orders",
                                        body=json.dumps(body)))
    assert [i.client_order_id for i in prepared.intents] == ["b-1", "b-2"]
    assert [i.quantity for i in prepared.intents] == [Decimal("0.01"), Decimal("2")]
    assert prepared.client_order_id is None  # a batch has no single id


def test_bitget_cancel_and_query_intents_carry_client_oid() -> None:
    prepared = EXCHANGE.prepare(inbound("POST", "/api/v2/spot/trade/cancel-order",
                                        body='{"symbol":"BTCUSDT","clientOid":"bot-1"}'))
    assert prepared.category is Category.CANCEL
    assert prepared.intents[0].client_order_id == "bot-1"
    prepared = EXCHANGE.prepare(inbound("GET", "/api/v2/spot/trade/orderInfo",
                                        query="clientOid=bot-1"))
    assert prepared.category is Category.READ and prepared.client_order_id == "bot-1"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v2/spot/wallet/withdrawal"),
        ("POST", "/api/v2/spot/wallet/cancel-withdrawal"),
        ("POST", "/api/v3/account/withdrawal"),
        ("POST", "/api/v2/spot/wallet/transfer"),
        ("POST", "/api/v3/account/transfer"),
        ("POST", "/api/v2/spot/wallet/subaccount-transfer"),
        ("POST", "/api/v2/user/create-virtual-subaccount-apikey"),
        ("POST", "/api/v2/user/modify-virtual-subaccount-apikey"),
        ("POST", "/api/v2/broker/manage/create-subaccount-apikey"),
        ("POST", "/api/v3/broker/delete-sub-apikey"),
        ("GET", "/api/v3/account/withdraw-address"),
        ("GET", "/api/v2/spot/wallet/deposit-address"),
        ("POST", "/api/v2/mix/order/place-order"),
        ("GET", "/api/v2/spot/trade/place-order"),
    ],
)
def test_bitget_dangerous_and_unknown_endpoints_forbidden(method: str, path: str) -> None:
    with pytest.raises(EndpointForbidden):
        EXCHANGE.prepare(inbound(method, path))


def _order(**changes: Any) -> str:
    return json.dumps({**LIMIT, **changes})


@pytest.mark.parametrize(
    ("method", "path", "query", "body"),
    [
        ("POST", "/api/v2/spot/trade/place-order", "", '{"symbol":"BTCUSDT","symbol":"ETHUSDT"}'),
        ("POST", "/api/v2/spot/trade/place-order", "symbol=BTCUSDT", _order()),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(size="1e3")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(size="-1")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(size="01")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(size="NaN")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(size="\uff11")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(size=" 1")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order().replace('"0.01"', "0.01")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(side="BUY")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(symbol="btcusdt")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(evil="1")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(presetStopLossPrice="1")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(clientOid="a" * 50)),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(clientOid="a b")),
        ("POST", "/api/v2/spot/trade/place-order", "", _order(orderType="market")),
        ("POST", "/api/v2/spot/trade/place-order", "", json.dumps(
            {k: v for k, v in LIMIT.items() if k != "price"})),
        ("POST", "/api/v2/spot/trade/place-order", "", "[1]"),
        ("POST", "/api/v2/spot/trade/place-order", "", "{bad json"),
        ("POST", "/api/v2/spot/trade/batch-orders", "", json.dumps(
            {"symbol": "BTCUSDT", "orderList": [{**LIMIT, "symbol": "ETHUSDT"}]})),
        ("POST", "/api/v2/spot/trade/batch-orders", "", json.dumps(
            {"symbol": "BTCUSDT", "orderList": []})),
        ("POST", "/api/v2/spot/trade/cancel-order", "", json.dumps(
            {"symbol": "BTCUSDT", "orderId": "1", "clientOid": "bot-1"})),
        ("GET", "/api/v2/spot/trade/orderInfo", "symbol=BTCUSDT&symbol=ETHUSDT", ""),
        ("GET", "/api/v2/spot/trade/orderInfo", "clientOid=a%26b%3D1", ""),
        ("GET", "/api/v2/spot/trade/orderInfo", "clientOid=1", '{"a":1}'),
        ("GET", "/api/v2/spot/trade/orderInfo", "clientOid=%ZZ", ""),
        ("GET", "/api/v2/spot/trade/../trade/orderInfo", "", ""),
        ("GET", "/api/v2/spot/trade//orderInfo", "", ""),
        ("GET", "/api/v2/spot/trade/orderinfo", "", ""),
        ("GET", "/api/v2/spot/trade/%6FrderInfo", "", ""),
    ],
)
def test_bitget_ambiguous_requests_are_bad_requests(
    method: str, path: str, query: str, body: str
) -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound(method, path, query=query, body=body))


def test_bitget_post_body_must_be_json() -> None:
    with pytest.raises(BadRequest, match="application/json"):
        EXCHANGE.prepare(inbound("POST", "/api/v2/spot/trade/place-order", body=_order(),
                                 ctype="application/x-www-form-urlencoded"))
