"""Bybit v5 signing against ccxt 4.5.90 and an independent recomputation of the documented
algorithm, plus the catalogue, auth stripping, intents and hostile canonicalisation.

Bybit publishes no usable vector (docs/exchanges.md "Test vectors": the guide's secret is not given), so
the oracles are ccxt and the formula in BYB-GUIDE computed here with hmac/cryptography.
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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from proxy.errors import BadRequest, EndpointForbidden
from proxy.exchanges.bybit import EXCHANGE
from proxy.model.request import Category, Inbound, Stamp
from proxy.model.sensitive import Secret

API_KEY = "XXXXXXXXXXXXXXXXXX"
HMAC_SECRET = "YYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYY"
TS = 1_700_000_000_123
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = _RSA.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def creds_for(secret: str):  # type: ignore[no-untyped-def]
    return EXCHANGE.load_credentials({"api_key": Secret(API_KEY), "api_secret": Secret(secret)}, 1)


def inbound(method: str, path: str, query: str = "", body: str = "",
            headers: tuple[tuple[str, str], ...] = ()) -> Inbound:
    hdrs = headers or ((("content-type", "application/json"),) if body else ())
    return Inbound(method, path, query.encode(), hdrs, body.encode())


def post(path: str, obj: Any) -> Inbound:
    return inbound("POST", path, body=json.dumps(obj, separators=(",", ":")))


def _ccxt(secret: str, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
    ex = ccxt.bybit({"apiKey": API_KEY, "secret": secret})
    ex.nonce = lambda: TS
    return ex.sign(path.lstrip("/"), ["private"], method, params)  # type: ignore[no-any-return]


ORDER = {"symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01",
         "price": "50000", "category": "spot", "timeInForce": "GTC", "orderLinkId": "bot-1"}
CASES = [
    ("POST", "/v5/order/create", ORDER),
    ("POST", "/v5/order/create", {"symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
                                  "category": "spot", "marketUnit": "quoteCoin", "qty": "100",
                                  "orderLinkId": "bot-2"}),
    ("POST", "/v5/order/cancel", {"symbol": "BTCUSDT", "orderLinkId": "bot-1", "category": "spot"}),
    ("POST", "/v5/order/create-batch", {"category": "linear", "request": [
        {"symbol": "BTCUSDT", "side": "Sell", "orderType": "Limit", "qty": "0.1",
         "price": "60000", "orderLinkId": "b-1", "reduceOnly": False, "positionIdx": 0},
        {"symbol": "ETHUSDT", "side": "Buy", "orderType": "Market", "qty": "1",
         "orderLinkId": "b-2"},
    ]}),
    ("GET", "/v5/order/realtime",
     {"category": "spot", "symbol": "BTCUSDT", "orderLinkId": "bot-1"}),
    ("GET", "/v5/account/wallet-balance", {"accountType": "UNIFIED"}),
    ("GET", "/v5/user/query-api", {}),
]


@pytest.mark.parametrize("kind", ["hmac", "rsa"])
@pytest.mark.parametrize(("method", "path", "params"), CASES)
def test_bybit_request_through_proxy_is_byte_identical_to_ccxt(
    kind: str, method: str, path: str, params: dict[str, Any]
) -> None:
    """ccxt signs the request; the same request, as a bot sends it through the proxy with
    its placeholder auth headers, must come out with exactly ccxt's bytes and headers."""
    secret = HMAC_SECRET if kind == "hmac" else RSA_PEM
    want = _ccxt(secret, method, path, json.loads(json.dumps(params)))
    url = str(want["url"])
    query = url.split("?", 1)[1] if "?" in url else ""
    body = str(want["body"] or "")
    placeholders = [(k.lower(), "placeholder") for k in want["headers"] if k != "Content-Type"]
    bot_headers = (*placeholders, ("content-type", "application/json"))
    bot = inbound(method, path, query=query, body=body, headers=bot_headers)
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds_for(secret), Stamp(TS), "api.bybit.com")
    got_query = out.path_and_query.split("?", 1)[1] if "?" in out.path_and_query else ""
    assert got_query == query
    assert out.body.decode() == body
    got = dict(out.headers)
    for name in ("X-BAPI-API-KEY", "X-BAPI-TIMESTAMP", "X-BAPI-RECV-WINDOW", "X-BAPI-SIGN",
                 "Content-Type"):
        assert got[name] == want["headers"][name]
    assert "Referer" not in got  # ccxt's broker header is not the proxy's to send


def test_bybit_hmac_signature_follows_documented_formula() -> None:
    query = "category=spot&symbol=BTCUSDT"
    prepared = EXCHANGE.prepare(inbound("GET", "/v5/order/realtime", query=query))
    out = EXCHANGE.sign(prepared, creds_for(HMAC_SECRET), Stamp(TS), "api.bybit.com")
    payload = f"{TS}{API_KEY}5000category=spot&symbol=BTCUSDT"
    want = hmac.new(HMAC_SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
    assert dict(out.headers)["X-BAPI-SIGN"] == want


def test_bybit_rsa_signature_verifies_with_public_key() -> None:
    body = json.dumps(ORDER, separators=(",", ":"))
    out = EXCHANGE.sign(EXCHANGE.prepare(inbound("POST", "/v5/order/create", body=body)),
                        creds_for(RSA_PEM), Stamp(TS), "api.bybit.com")
    sig = base64.b64decode(dict(out.headers)["X-BAPI-SIGN"])
    _RSA.public_key().verify(sig, f"{TS}{API_KEY}5000{body}".encode(), padding.PKCS1v15(),
                             hashes.SHA256())


def test_bybit_ed25519_keys_refused() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ValueError, match="HMAC secrets or RSA"):
        creds_for(pem)


def test_bybit_public_endpoint_is_unsigned() -> None:
    out = EXCHANGE.sign(EXCHANGE.prepare(inbound("GET", "/v5/market/instruments-info",
                                                 query="category=spot")),
                        creds_for(HMAC_SECRET), Stamp(TS), "api.bybit.com")
    assert out.headers == () and out.path_and_query == "/v5/market/instruments-info?category=spot"


def test_bybit_strips_bot_auth_in_params_and_headers() -> None:
    bot = Inbound("GET", "/v5/account/wallet-balance",
                  b"accountType=UNIFIED&api_key=evil&timestamp=1&sign=abc&recv_window=99999",
                  (("x-bapi-api-key", "evil"), ("x-bapi-sign", "abc"),
                   ("x-bapi-recv-window", "99999"), ("referer", "CCXT")), b"")
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds_for(HMAC_SECRET), Stamp(TS), "h")
    assert out.path_and_query == "/v5/account/wallet-balance?accountType=UNIFIED"
    assert {k for k, _ in out.headers} == {
        "Content-Type", "X-BAPI-API-KEY", "X-BAPI-TIMESTAMP", "X-BAPI-RECV-WINDOW", "X-BAPI-SIGN"}
    assert dict(out.headers)["X-BAPI-API-KEY"] == API_KEY
    assert dict(out.headers)["X-BAPI-RECV-WINDOW"] == "5000"
    body = post("/v5/order/create", {**ORDER, "api_key": "evil", "sign": "x"})
    assert json.loads(EXCHANGE.prepare(body).body) == ORDER


def test_bybit_limit_order_intent() -> None:
    prepared = EXCHANGE.prepare(post("/v5/order/create", ORDER))
    (intent,) = prepared.intents
    assert prepared.category is Category.TRADE
    assert (intent.symbol, intent.side, intent.order_type, intent.time_in_force) == (
        "BTCUSDT", "buy", "limit", "GTC")
    assert intent.quantity == Decimal("0.01") and intent.price == Decimal("50000")
    assert intent.notional == Decimal("500.00") and intent.client_order_id == "bot-1"


@pytest.mark.parametrize(
    ("extra", "side", "quote"),
    [
        ({}, "Buy", True),                              # spot market buy: by value by default
        ({}, "Sell", False),
        ({"marketUnit": "baseCoin"}, "Buy", False),
        ({"marketUnit": "quoteCoin"}, "Sell", True),
    ],
)
def test_bybit_spot_market_quantity_semantics(
    extra: dict[str, str], side: str, quote: bool
) -> None:
    order = {"category": "spot", "symbol": "BTCUSDT", "side": side, "orderType": "Market",
             "qty": "100", **extra}
    (intent,) = EXCHANGE.prepare(post("/v5/order/create", order)).intents
    if quote:
        assert intent.quote_quantity == Decimal("100") and intent.quantity is None
        assert intent.notional == Decimal("100")
    else:
        assert intent.quantity == Decimal("100") and intent.quote_quantity is None
        assert intent.notional is None


def test_bybit_linear_market_buy_is_base_quantity() -> None:
    order = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
             "qty": "0.5"}
    (intent,) = EXCHANGE.prepare(post("/v5/order/create", order)).intents
    assert intent.quantity == Decimal("0.5") and intent.quote_quantity is None


def test_bybit_batch_every_order_is_an_intent() -> None:
    _, path, params = CASES[3]
    prepared = EXCHANGE.prepare(post(path, params))
    assert [(i.symbol, i.side, i.client_order_id) for i in prepared.intents] == [
        ("BTCUSDT", "sell", "b-1"), ("ETHUSDT", "buy", "b-2")]
    assert prepared.endpoint.batch


def test_bybit_cancel_and_query_intents_carry_order_link_id() -> None:
    cancel = EXCHANGE.prepare(post("/v5/order/cancel", CASES[2][2]))
    assert cancel.category is Category.CANCEL and cancel.client_order_id == "bot-1"
    query = EXCHANGE.prepare(
        inbound("GET", "/v5/order/realtime", query="category=spot&orderLinkId=x1"))
    assert query.category is Category.READ and query.client_order_id == "x1"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v5/asset/withdraw/create"),
        ("POST", "/v5/asset/withdraw/cancel"),
        ("POST", "/v5/asset/transfer/inter-transfer"),
        ("POST", "/v5/asset/transfer/universal-transfer"),
        ("POST", "/v5/user/create-sub-api"),
        ("POST", "/v5/user/update-api"),
        ("POST", "/v5/user/update-sub-api"),
        ("POST", "/v5/user/delete-api"),
        ("POST", "/v5/user/delete-sub-api"),
        ("GET", "/v5/asset/withdraw/query-address"),
        ("GET", "/v5/asset/deposit/query-address"),
        ("POST", "/v5/position/set-leverage"),
        ("GET", "/v5/order/create"),
        ("DELETE", "/v5/order/cancel"),
    ],
)
def test_bybit_dangerous_and_unknown_endpoints_forbidden(method: str, path: str) -> None:
    with pytest.raises(EndpointForbidden):
        EXCHANGE.prepare(inbound(method, path))


BASE = '"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit"'
QP = ',"qty":"1","price":"1"'


@pytest.mark.parametrize(
    ("path", "query", "body"),
    [
        ("/v5/order/create", "", "{" + BASE + ',"qty":"1","price":"1","qty":"2"}'),
        ("/v5/order/create", "qty=1", "{" + BASE + ',"qty":"1","price":"1"}'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":1.5,"price":"1"}'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":"1e3","price":"1"}'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":"NaN","price":"1"}'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":"-1","price":"1"}'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":"01","price":"1"}'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":"\\uff11","price":"1"}'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":" 1","price":"1"}'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":"1"}'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":"1","price":"1","evil":"1"}'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":"1","price":"1","orderLinkId":"a.b"}'),
        ("/v5/order/create", "", "{" + BASE.replace("Buy", "buy") + ',"qty":"1","price":"1"}'),
        ("/v5/order/create", "", "{" + BASE.replace("BTCUSDT", "btcusdt") + QP + "}"),
        ("/v5/order/create", "", "{" + BASE.replace('"spot"', '"margin"') + QP + "}"),
        ("/v5/order/create", "", "{" + BASE + ',"qty":"1","price":"1","marketUnit":"quoteCoin"}'),
        ("/v5/order/create", "", '{"category":"spot","symbol":"BTCUSDT","side":"Buy",'
                                 '"orderType":"Market","qty":"1","price":"5"}'),
        ("/v5/order/create", "", "[" + "{" + BASE + ',"qty":"1","price":"1"}]'),
        ("/v5/order/create", "", "{" + BASE + ',"qty":"1","price":"1"'),
        ("/v5/order/create-batch", "", '{"category":"spot","request":[]}'),
        ("/v5/order/create-batch", "", '{"category":"spot","request":[{' + BASE + QP + "}]}"),
        ("/v5/order/amend", "", '{"category":"spot","symbol":"BTCUSDT","qty":"1"}'),
        ("/v5/order/create/../create", "", "{}"),
        ("/v5//order/create", "", "{}"),
        ("/v5/order/%63reate", "", "{}"),
        ("/V5/order/create", "", "{}"),
    ],
)
def test_bybit_ambiguous_requests_are_bad_requests(path: str, query: str, body: str) -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("POST", path, query=query, body=body))


def test_bybit_get_with_duplicate_or_body_refused() -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("GET", "/v5/order/realtime", query="symbol=A&symbol=B"))
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("GET", "/v5/order/realtime", query="category=spot", body="{}"))


def test_bybit_form_body_refused() -> None:
    bot = inbound("POST", "/v5/order/cancel", body="symbol=BTCUSDT",
                  headers=(("content-type", "application/x-www-form-urlencoded"),))
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(bot)


def test_bybit_credentials_repr_hides_secret() -> None:
    for secret in (HMAC_SECRET, RSA_PEM):
        creds = creds_for(secret)
        assert secret not in repr(creds) and "PRIVATE" not in repr(creds)


def test_bybit_base_urls() -> None:
    assert EXCHANGE.base_url("live") == "https://api.bybit.com"
    assert EXCHANGE.base_url("testnet") == "https://api-testnet.bybit.com"
