"""Binance signing against the published vectors and ccxt 4.5.90, and request canonicalisation."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from urllib.parse import parse_qsl

import ccxt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from proxy.errors import BadRequest, EndpointForbidden
from proxy.exchanges.binance import EXCHANGE, signature_for
from proxy.model.request import Category, Inbound, Stamp
from proxy.model.sensitive import Secret

# docs/exchanges.md, "Test vectors" #1 and #2 (Binance's own documentation).
VEC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
VEC_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
VECTORS = [
    (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
        "&recvWindow=5000&timestamp=1499827319559",
        "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71",
    ),
    (
        "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT"
        "&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
        "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3",
    ),
]
TS = 1_700_000_000_123


def creds_for(secret: str):  # type: ignore[no-untyped-def]
    return EXCHANGE.load_credentials({"api_key": Secret(VEC_KEY), "api_secret": Secret(secret)}, 1)


def inbound(method: str, path: str, query: str = "", body: str = "", ctype: str = "") -> Inbound:
    headers = (("content-type", ctype or "application/x-www-form-urlencoded"),) if body else ()
    return Inbound(method, path, query.encode(), headers, body.encode())


@pytest.mark.parametrize(("payload", "expected"), VECTORS)
def test_binance_published_hmac_vectors(payload: str, expected: str) -> None:
    assert signature_for(creds_for(VEC_SECRET), payload.encode()) == expected


def test_binance_docs_request_signed_end_to_end_matches_vector() -> None:
    # The docs' request without its timestamp goes through prepare(); the proxy adds the same
    # timestamp, first. The vector's payload order differs, so verify with an independent HMAC.
    body = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
    prepared = EXCHANGE.prepare(inbound("POST", "/api/v3/order", body=body))
    out = EXCHANGE.sign(prepared, creds_for(VEC_SECRET), Stamp(1499827319559), "api.binance.com")
    sent = out.body.decode()
    unsigned, sig = sent.rsplit("&signature=", 1)
    assert unsigned == "timestamp=1499827319559&" + body
    assert sig == hmac.new(VEC_SECRET.encode(), unsigned.encode(), hashlib.sha256).hexdigest()
    assert ("X-MBX-APIKEY", VEC_KEY) in out.headers


def _ccxt_request(secret: str, path: str, method: str, params: dict[str, str]) -> dict[str, object]:
    ex = ccxt.binance({"apiKey": VEC_KEY, "secret": secret})
    ex.nonce = lambda: TS
    return ex.sign(path, ["private"], method, dict(params))  # type: ignore[no-any-return]


def _pem_ed25519() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _pem_rsa() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
         "quantity": "0.01", "price": "50000", "newClientOrderId": "bot-1"}


@pytest.mark.parametrize("kind", ["hmac", "ed25519", "rsa"])
@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("POST", "order", ORDER),
        ("GET", "order", {"symbol": "BTCUSDT", "origClientOrderId": "bot-1"}),
        ("DELETE", "order", {"symbol": "BTCUSDT", "origClientOrderId": "bot-1"}),
        ("GET", "account", {}),
        ("POST", "order", {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET",
                           "quoteOrderQty": "100"}),
    ],
)
def test_binance_request_through_proxy_is_byte_identical_to_ccxt(
    kind: str, method: str, path: str, params: dict[str, str]
) -> None:
    """ccxt signs with its placeholder-free keys; the same unsigned request through prepare()
    and sign() with the same timestamp must produce exactly ccxt's bytes."""
    secret = {"hmac": VEC_SECRET, "ed25519": _pem_ed25519(), "rsa": _pem_rsa()}[kind]
    params = dict(params)
    if method == "POST" and "newClientOrderId" not in params:
        params["newClientOrderId"] = "fixed-id-1"  # keep ccxt from inventing a broker id
    want = _ccxt_request(secret, path, method, params)
    url = str(want["url"])
    query = url.split("?", 1)[1] if "?" in url else ""
    body = str(want["body"] or "")
    # What a bot would send: ccxt's request with its own (here: placeholder) signature.
    bot = inbound(method, f"/api/v3/{path}", query=query, body=body)
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds_for(secret), Stamp(TS), "api.binance.com")
    got_query = out.path_and_query.split("?", 1)[1] if "?" in out.path_and_query else ""
    # HMAC, RSA PKCS#1 v1.5 and Ed25519 are all deterministic: the bytes must match exactly.
    assert got_query == query
    assert out.body.decode() == body


def test_binance_strips_bot_auth_and_ignores_bot_headers() -> None:
    bot = Inbound(
        "GET", "/api/v3/account", b"timestamp=1&signature=deadbeef",
        (("x-mbx-apikey", "attacker"), ("content-type", "text/plain")), b"",
    )
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds_for(VEC_SECRET), Stamp(TS), "h")
    pairs = parse_qsl(out.path_and_query.split("?", 1)[1])
    assert [k for k, _ in pairs] == ["timestamp", "signature"]
    assert dict(pairs)["timestamp"] == str(TS)
    assert dict(out.headers) == {"X-MBX-APIKEY": VEC_KEY}


def test_binance_order_intent_extracted() -> None:
    prepared = EXCHANGE.prepare(inbound("POST", "/api/v3/order", body=ccxt_body(ORDER)))
    (intent,) = prepared.intents
    assert prepared.category is Category.TRADE
    assert intent.symbol == "BTCUSDT" and intent.side == "buy" and intent.order_type == "limit"
    assert intent.quantity == Decimal("0.01") and intent.price == Decimal("50000")
    assert intent.notional == Decimal("500.00")
    assert intent.client_order_id == "bot-1"


def ccxt_body(params: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/sapi/v1/capital/withdraw/apply"),
        ("POST", "/sapi/v1/asset/transfer"),
        ("POST", "/sapi/v1/sub-account/universalTransfer"),
        ("POST", "/sapi/v1/broker/subAccountApi"),
        ("GET", "/sapi/v1/capital/deposit/address"),
        ("POST", "/api/v3/unknown"),
        ("PUT", "/api/v3/order"),
    ],
)
def test_binance_dangerous_and_unknown_endpoints_forbidden(method: str, path: str) -> None:
    with pytest.raises(EndpointForbidden):
        EXCHANGE.prepare(inbound(method, path))


@pytest.mark.parametrize(
    ("path", "query", "body"),
    [
        ("/api/v3/order", "", "symbol=BTCUSDT&symbol=ETHUSDT&side=BUY&type=MARKET&quantity=1"),
        ("/api/v3/order", "symbol=BTCUSDT", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1e3"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=NaN"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=-1"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=%2B1"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=01"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=%EF%BC%91"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0x10"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=%201"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=buy&type=MARKET&quantity=1"),
        ("/api/v3/order", "", "symbol=btcusdt&side=BUY&type=MARKET&quantity=1"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1&evil=1"),
        ("/api/v3/order", "", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1%ZZ"),
        ("/api/v3/order/../order", "", "symbol=BTCUSDT"),
        ("/api/v3//order", "", "symbol=BTCUSDT"),
        ("/api/v3/%6Frder", "", "symbol=BTCUSDT"),
        ("/api/v3/Order", "", "symbol=BTCUSDT"),
        ("/API/V3/ORDER", "", "symbol=BTCUSDT"),
    ],
)
def test_binance_ambiguous_requests_are_bad_requests(path: str, query: str, body: str) -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("POST", path, query=query, body=body))


def test_binance_credentials_repr_hides_secret() -> None:
    creds = creds_for(VEC_SECRET)
    assert VEC_SECRET not in repr(creds) and VEC_SECRET not in str(creds)
    pem = _pem_ed25519()
    assert "PRIVATE" not in repr(creds_for(pem))
