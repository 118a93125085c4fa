"""Coinbase JWT signing against ccxt 4.5.90 (claims and headers exactly, signatures verified with
the public key), and request canonicalisation and intent extraction."""

from __future__ import annotations

import base64
import json
import uuid
from decimal import Decimal
from typing import Any

import ccxt
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from proxy.errors import BadRequest, EndpointForbidden
from proxy.exchanges.base import Credentials
from proxy.exchanges.coinbase import EXCHANGE
from proxy.model.request import Action, Category, Inbound, Stamp
from proxy.model.sensitive import Secret

KEY_NAME = "organizations/0a1b2c3d-org/apiKeys/4e5f6a7b-key"
TS_MS = 1_700_000_000_123
UNIQUE = "3f2a9c1e-7b4d-4e8a-9f10-2b3c4d5e6f70"


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _ed_secret() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed + pub).decode()


def _public_key(secret: str) -> Any:
    if secret.startswith("-----BEGIN"):
        private = serialization.load_pem_private_key(secret.encode(), password=None)
        return private.public_key()
    return ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret)[:32]).public_key()


SECRETS = {"es256": _ec_pem(), "ed25519": _ed_secret()}


def creds(secret: str) -> Credentials:
    return EXCHANGE.load_credentials({"api_key": Secret(KEY_NAME), "api_secret": Secret(secret)}, 1)


def inbound(method: str, path: str, query: str = "", body: str = "",
            headers: tuple[tuple[str, str], ...] = ()) -> Inbound:
    hdrs = ((("content-type", "application/json"),) if body else ()) + headers
    return Inbound(method, path, query.encode(), hdrs, body.encode())


def _ccxt_sign(secret: str, host: str, path: str, method: str, params: dict[str, Any]) -> Any:
    ex = ccxt.coinbase({"apiKey": KEY_NAME, "secret": secret})
    ex.urls["api"]["rest"] = f"https://{host}"
    ex.seconds = lambda: TS_MS // 1000
    ex.milliseconds = lambda: TS_MS
    ex.random_bytes = lambda n: uuid.UUID(UNIQUE).hex  # ccxt: random_bytes(16) as hex
    return ex.sign(path, ["v3", "private"], method, dict(params))


LIMIT = {
    "client_order_id": "bot-1", "product_id": "BTC-USD", "side": "BUY",
    "order_configuration": {"limit_limit_gtc": {
        "base_size": "0.01", "limit_price": "50000", "post_only": False}},
}
MARKET_QUOTE = {
    "client_order_id": "bot-2", "product_id": "ETH-USD", "side": "BUY",
    "order_configuration": {"market_market_ioc": {"quote_size": "100"}},
}
CASES = [
    ("POST", "brokerage/orders", LIMIT),
    ("POST", "brokerage/orders", MARKET_QUOTE),
    ("POST", "brokerage/orders/batch_cancel", {"order_ids": ["0000-1111", "2222-3333"]}),
    ("GET", "brokerage/orders/historical/{order_id}", {"order_id": "0000-1111"}),
    ("GET", "brokerage/orders/historical/batch", {"order_status": "OPEN", "limit": 100}),
    ("GET", "brokerage/accounts", {"limit": 250}),
]


@pytest.mark.parametrize("host", ["api.coinbase.com", "127.0.0.1:9001"])
@pytest.mark.parametrize("kind", ["es256", "ed25519"])
@pytest.mark.parametrize(("method", "path", "params"), CASES)
def test_coinbase_jwt_claims_and_request_match_ccxt(
    kind: str, host: str, method: str, path: str, params: dict[str, Any]
) -> None:
    """The bot's request (what ccxt would send, with ccxt's own token) goes through prepare()
    and sign(); the wire bytes must equal ccxt's, and the JWT header and claims must equal
    ccxt's exactly. ES256 is randomised, so both signatures are verified instead."""
    secret = SECRETS[kind]
    want = _ccxt_sign(secret, host, path, method, params)
    url = str(want["url"])
    target = url.split(host, 1)[1]
    bot_path, _, query = target.partition("?")
    body = want["body"] or ""
    bot = inbound(method, bot_path, query, body, headers=tuple(
        (k.lower(), v) for k, v in want["headers"].items()))
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds(secret), Stamp(TS_MS, 0, UNIQUE), host)
    assert out.path_and_query == target
    assert out.body.decode() == body
    got_headers = dict(out.headers)
    assert set(got_headers) <= {"Authorization", "Content-Type"}
    got, theirs = (h["Authorization"].split(" ", 1)[1] for h in (got_headers, want["headers"]))
    assert jwt.get_unverified_header(got) == jwt.get_unverified_header(theirs)
    alg = {"es256": "ES256", "ed25519": "EdDSA"}[kind]
    options: jwt.types.Options = {"verify_exp": False, "verify_nbf": False, "verify_aud": False, "verify_iat": False}
    public = _public_key(secret)
    mine = jwt.decode(got, public, algorithms=[alg], options=options)
    ref = jwt.decode(theirs, public, algorithms=[alg], options=options)
    assert mine == ref
    uri = f"{method} {host}{bot_path}"
    assert (mine.get("uri") or mine["uris"][0]) == uri


def test_coinbase_jwt_shape_per_spec() -> None:
    out = EXCHANGE.sign(
        EXCHANGE.prepare(inbound("GET", "/api/v3/brokerage/accounts", "limit=250")),
        creds(SECRETS["es256"]), Stamp(TS_MS, 0, UNIQUE), "api.coinbase.com",
    )
    token = dict(out.headers)["Authorization"].removeprefix("Bearer ")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": KEY_NAME,
                      "nonce": UNIQUE.replace("-", "")}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["nbf"] == TS_MS // 1000 and claims["exp"] == claims["nbf"] + 120
    assert claims["sub"] == KEY_NAME
    assert claims["uri"] == "GET api.coinbase.com/api/v3/brokerage/accounts"  # no query


def test_coinbase_bot_auth_headers_replaced() -> None:
    bot = inbound("GET", "/api/v3/brokerage/accounts", headers=(
        ("authorization", "Bearer stolen.jwt.token"), ("cb-access-key", "x"),
        ("cb-access-sign", "y")))
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds(SECRETS["ed25519"]),
                        Stamp(TS_MS, 0, UNIQUE), "api.coinbase.com")
    assert [k for k, _ in out.headers] == ["Authorization"]
    assert "stolen" not in dict(out.headers)["Authorization"]
    assert "Bearer" not in repr(out)


def test_coinbase_public_endpoints_unsigned() -> None:
    prepared = EXCHANGE.prepare(inbound("GET", "/api/v3/brokerage/market/products"))
    assert prepared.category is Category.PUBLIC
    out = EXCHANGE.sign(prepared, creds(SECRETS["es256"]), Stamp(TS_MS, 0, UNIQUE), "h")
    assert out.headers == ()


def test_coinbase_limit_intent() -> None:
    prepared = EXCHANGE.prepare(inbound("POST", "/api/v3/brokerage/orders", body=json.dumps(LIMIT)))
    (intent,) = prepared.intents
    assert prepared.category is Category.TRADE and prepared.endpoint.action is Action.PLACE
    assert (intent.symbol, intent.side, intent.order_type, intent.time_in_force) == (
        "BTC-USD", "buy", "limit", "GTC")
    assert intent.quantity == Decimal("0.01") and intent.price == Decimal("50000")
    assert intent.notional == Decimal("500.00") and intent.client_order_id == "bot-1"
    assert prepared.client_order_id == "bot-1"


def test_coinbase_quote_sized_market_buy_intent() -> None:
    prepared = EXCHANGE.prepare(
        inbound("POST", "/api/v3/brokerage/orders", body=json.dumps(MARKET_QUOTE)))
    (intent,) = prepared.intents
    assert intent.order_type == "market" and intent.quantity is None
    assert intent.quote_quantity == Decimal("100") and intent.notional == Decimal("100")


def test_coinbase_base_sized_market_sell_has_no_notional() -> None:
    order = {**MARKET_QUOTE, "side": "SELL",
             "order_configuration": {"market_market_ioc": {"base_size": "0.5"}}}
    (intent,) = EXCHANGE.prepare(
        inbound("POST", "/api/v3/brokerage/orders", body=json.dumps(order))).intents
    assert intent.quantity == Decimal("0.5") and intent.notional is None


def test_coinbase_body_is_canonical_compact_json() -> None:
    spaced = json.dumps(LIMIT, indent=2)
    prepared = EXCHANGE.prepare(inbound("POST", "/api/v3/brokerage/orders", body=spaced))
    assert prepared.body == json.dumps(LIMIT, separators=(",", ":")).encode()


def test_coinbase_repeated_list_query_keys_kept() -> None:
    q = "order_status=OPEN&order_status=PENDING&product_ids=BTC-USD"
    prepared = EXCHANGE.prepare(inbound("GET", "/api/v3/brokerage/orders/historical/batch", q))
    assert prepared.query == q


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/accounts/abc-123/transactions"),
        ("POST", "/v2/accounts/abc-123/withdrawals"),
        ("POST", "/v2/accounts/abc-123/withdrawals/w-1/commit"),
        ("POST", "/v2/accounts/abc-123/addresses"),
        ("POST", "/api/v3/brokerage/portfolios/move_funds"),
        ("POST", "/api/v3/brokerage/intx/allocate"),
        ("POST", "/api/v3/brokerage/portfolios"),
        ("DELETE", "/api/v3/brokerage/portfolios/p-1"),
        ("POST", "/api/v3/brokerage/convert/quote"),
        ("POST", "/api/v3/brokerage/orders/edit"),
        ("GET", "/v2/user"),
        ("PUT", "/api/v3/brokerage/orders"),
    ],
)
def test_coinbase_dangerous_and_unknown_endpoints_forbidden(method: str, path: str) -> None:
    with pytest.raises(EndpointForbidden):
        EXCHANGE.prepare(inbound(method, path, body="{}" if method != "GET" else ""))


def _order(**changes: Any) -> str:
    order: dict[str, Any] = json.loads(json.dumps(LIMIT))
    order.update(changes)
    return json.dumps(order)


CONF = "order_configuration"


@pytest.mark.parametrize(
    "body",
    [
        '{"client_order_id":"a","client_order_id":"b","product_id":"BTC-USD","side":"BUY",'
        '"order_configuration":{"market_market_ioc":{"quote_size":"1"}}}',
        _order(**{CONF: {"limit_limit_gtc": {"base_size": 0.01, "limit_price": "50000"}}}),
        _order(**{CONF: {"limit_limit_gtc": {"base_size": "1e-2", "limit_price": "50000"}}}),
        _order(**{CONF: {"limit_limit_gtc": {"base_size": "NaN", "limit_price": "50000"}}}),
        _order(**{CONF: {"limit_limit_gtc": {"base_size": "-1", "limit_price": "50000"}}}),
        _order(**{CONF: {"limit_limit_gtc": {"base_size": "0.01"}}}),
        _order(**{CONF: {"limit_limit_gtc": {"base_size": "1", "limit_price": "1", "x": "1"}}}),
        _order(**{CONF: {"market_market_ioc": {"base_size": "1", "quote_size": "1"}}}),
        _order(**{CONF: {"market_market_ioc": {}}}),
        _order(**{CONF: {"market_market_ioc": {"quote_size": "1"},
                         "limit_limit_gtc": {"base_size": "1", "limit_price": "1"}}}),
        _order(**{CONF: {"mystery_kind": {"base_size": "1"}}}),
        _order(side="buy"),
        _order(product_id="btc-usd"),
        _order(client_order_id=""),
        _order(client_order_id=17),
        _order(attached_order_configuration={}),
        _order(**{CONF: {"limit_limit_gtc": {
            "base_size": "1", "limit_price": "1", "post_only": "false"}}}),
        "[1, 2]",
        "not json",
    ],
)
def test_coinbase_ambiguous_orders_are_bad_requests(body: str) -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("POST", "/api/v3/brokerage/orders", body=body))


@pytest.mark.parametrize(
    ("method", "path", "query", "body"),
    [
        ("POST", "/api/v3/brokerage/orders", "client_order_id=x", json.dumps(LIMIT)),
        ("GET", "/api/v3/brokerage/accounts", "limit=1&limit=2", ""),
        ("GET", "/api/v3/brokerage/accounts", "", "{}"),
        ("GET", "/api/v3/brokerage/accounts", "limit=%ZZ", ""),
        ("GET", "/api/v3/Brokerage/accounts", "", ""),
        ("GET", "/api/v3/brokerage/../brokerage/accounts", "", ""),
        ("POST", "/api/v3/brokerage/orders/batch_cancel", "", '{"order_ids":[]}'),
        ("POST", "/api/v3/brokerage/orders/batch_cancel", "", '{"order_ids":["a"],"x":1}'),
    ],
)
def test_coinbase_ambiguous_requests_are_bad_requests(
    method: str, path: str, query: str, body: str
) -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound(method, path, query, body))


def test_coinbase_form_body_refused() -> None:
    bot = Inbound("POST", "/api/v3/brokerage/orders", b"",
                  (("content-type", "application/x-www-form-urlencoded"),), b"a=1")
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(bot)


def test_coinbase_credentials_load_and_hide_secret() -> None:
    for secret in SECRETS.values():
        c = creds(secret)
        assert secret not in repr(c) and "PRIVATE" not in repr(c) and secret[:20] not in str(c)


@pytest.mark.parametrize(
    "secret",
    [
        "legacy-hmac-secret",
        base64.b64encode(b"\x01" * 32).decode(),  # only a seed
        base64.b64encode(b"\x01" * 64).decode(),  # public half does not match the seed
        "-----BEGIN EC PRIVATE KEY-----\nnot a key\n-----END EC PRIVATE KEY-----\n",
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode(),
    ],
    ids=["legacy-hmac", "seed-only", "mismatched-halves", "bad-pem", "p384-key"],
)
def test_coinbase_malformed_secrets_refused_without_echo(secret: str) -> None:
    with pytest.raises(ValueError, match="api_secret") as info:
        creds(secret)
    assert secret not in str(info.value)


def test_coinbase_base_urls() -> None:
    assert EXCHANGE.base_url("live") == "https://api.coinbase.com"
    assert EXCHANGE.base_url("testnet") == "https://api-sandbox.coinbase.com"
