"""Bitstamp v2 X-Auth signing against the documented formula and ccxt 4.5.90."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from proxy.errors import BadRequest, EndpointForbidden
from proxy.exchanges.base import Credentials
from proxy.exchanges.bitstamp import EXCHANGE
from proxy.model.request import Category, Inbound, Stamp
from proxy.model.sensitive import Secret

KEY = "abcdefghijklmnopqrstuvwxyz012345"
SECRET = "ZYXWVUTSRQPONMLKJIHGFEDCBA987654"
TS = 1_700_000_000_123
NONCE = "0b2b6a3e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"
HOST = "www.bitstamp.net"
FORM = "application/x-www-form-urlencoded"


def creds() -> Credentials:
    return EXCHANGE.load_credentials({"api_key": Secret(KEY), "api_secret": Secret(SECRET)}, 1)


def inbound(method: str, path: str, body: str = "", query: str = "", ctype: str = FORM) -> Inbound:
    headers = (("content-type", ctype),) if body else ()
    return Inbound(method, path, query.encode(), headers, body.encode())


def _signed(path: str, body: str = "", host: str = HOST) -> dict[str, str]:
    out = EXCHANGE.sign(EXCHANGE.prepare(inbound("POST", path, body)), creds(),
                        Stamp(TS, unique=NONCE), host)
    assert out.body.decode() == body
    return dict(out.headers)


def _doc_signature(method: str, host: str, path: str, ctype: str, body: str) -> str:
    # BS-DOC "V2 authentication method", written out independently of the code under test.
    message = ("BITSTAMP " + KEY + method + host + path + "" + ctype + NONCE + str(TS) + "v2"
               + body)
    return hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()


def _ccxt(path: str, params: dict[str, Any]) -> dict[str, Any]:
    ex = ccxt.bitstamp({"apiKey": KEY, "secret": SECRET})
    ex.uuid = lambda: NONCE
    ex.milliseconds = lambda: TS
    return ex.sign(path, ["private"], "POST", params)  # type: ignore[no-any-return]


CASES: list[tuple[str, dict[str, str]]] = [
    ("buy/{pair}/", {"pair": "btcusd", "amount": "0.01", "price": "50000",
                     "client_order_id": "bot-1"}),
    ("sell/{pair}/", {"pair": "btcusd", "amount": "0.01", "price": "60000",
                      "client_order_id": "bot-2", "ioc_order": "True"}),
    ("buy/market/{pair}/", {"pair": "ethusd", "amount": "0.5", "client_order_id": "m-1"}),
    ("buy/instant/{pair}/", {"pair": "ethusd", "amount": "100", "client_order_id": "i-1"}),
    ("cancel_order/", {"id": "1234567890"}),
    ("order_status/", {"client_order_id": "bot-1"}),
    ("open_orders/all/", {}),
    ("account_balances/", {}),
]


@pytest.mark.parametrize(("path", "params"), CASES)
def test_bitstamp_request_through_proxy_is_byte_identical_to_ccxt(
    path: str, params: dict[str, str]
) -> None:
    want = _ccxt(path, dict(params))
    url = str(want["url"]).removeprefix(f"https://{HOST}")
    body = str(want["body"] or "")  # ccxt sends "foo=bar" on an otherwise empty POST
    bot = Inbound("POST", url, b"", (("content-type", FORM), ("x-auth", "BITSTAMP placeholder"),
                                     ("x-auth-signature", "0" * 64)), body.encode())
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds(), Stamp(TS, unique=NONCE), HOST)
    assert out.path_and_query == url
    assert out.body.decode() == body
    assert dict(out.headers) == want["headers"]


def test_bitstamp_signature_follows_documented_formula() -> None:
    body = "amount=0.01&price=50000"
    headers = _signed("/api/v2/buy/btcusd/", body)
    assert headers["X-Auth-Signature"] == _doc_signature(
        "POST", HOST, "/api/v2/buy/btcusd/", FORM, body)
    assert headers["X-Auth"] == f"BITSTAMP {KEY}"
    assert headers["X-Auth-Nonce"] == NONCE and headers["X-Auth-Timestamp"] == str(TS)
    assert headers["X-Auth-Version"] == "v2" and headers["Content-Type"] == FORM


def test_bitstamp_empty_body_leaves_out_content_type() -> None:
    # "Content-Type should not be added to the string if request.body is empty", and no
    # Content-Type header is sent without a body.
    headers = _signed("/api/v2/account_balances/")
    assert "Content-Type" not in headers
    assert headers["X-Auth-Signature"] == _doc_signature(
        "POST", HOST, "/api/v2/account_balances/", "", "")


def test_bitstamp_signature_names_the_host_actually_sent_to() -> None:
    host = "127.0.0.1:18999"
    headers = _signed("/api/v2/account_balances/", "foo=bar", host=host)
    assert headers["X-Auth-Signature"] == _doc_signature(
        "POST", host, "/api/v2/account_balances/", FORM, "foo=bar")
    assert headers["X-Auth-Signature"] != _signed("/api/v2/account_balances/", "foo=bar")[
        "X-Auth-Signature"]


def test_bitstamp_nonce_must_be_a_lowercase_uuid() -> None:
    prepared = EXCHANGE.prepare(inbound("POST", "/api/v2/account_balances/"))
    for bad in ("", "1700000000123", NONCE.upper()):
        with pytest.raises(ValueError, match="UUID"):
            EXCHANGE.sign(prepared, creds(), Stamp(TS, unique=bad), HOST)


def test_bitstamp_public_requests_unsigned() -> None:
    prepared = EXCHANGE.prepare(inbound("GET", "/api/v2/ticker/btcusd/"))
    assert prepared.category is Category.PUBLIC
    out = EXCHANGE.sign(prepared, creds(), Stamp(TS, unique=NONCE), HOST)
    assert out.headers == () and out.path_and_query == "/api/v2/ticker/btcusd/"


def test_bitstamp_limit_intent_from_path_and_body() -> None:
    prepared = EXCHANGE.prepare(inbound("POST", "/api/v2/sell/btcusd/",
                                        "amount=0.5&price=60000&client_order_id=c-1"))
    (intent,) = prepared.intents
    assert prepared.category is Category.TRADE
    assert (intent.symbol, intent.side, intent.order_type, intent.time_in_force) == (
        "btcusd", "sell", "limit", "gtc")
    assert intent.quantity == Decimal("0.5") and intent.price == Decimal("60000")
    assert intent.notional == Decimal("30000.0") and prepared.client_order_id == "c-1"


def test_bitstamp_quantity_semantics() -> None:
    def intent(path: str, body: str):  # type: ignore[no-untyped-def]
        return EXCHANGE.prepare(inbound("POST", path, body)).intents[0]

    market = intent("/api/v2/buy/market/btcusd/", "amount=0.1")
    assert market.quantity == Decimal("0.1") and market.quote_quantity is None
    instant_buy = intent("/api/v2/buy/instant/btcusd/", "amount=250")
    assert instant_buy.quote_quantity == Decimal("250") and instant_buy.quantity is None
    instant_sell = intent("/api/v2/sell/instant/btcusd/", "amount=0.2")
    assert instant_sell.quantity == Decimal("0.2")
    counter = intent("/api/v2/sell/instant/btcusd/", "amount=300&amount_in_counter=True")
    assert counter.quote_quantity == Decimal("300") and counter.quantity is None


def test_bitstamp_cancel_and_status_categories() -> None:
    p = EXCHANGE.prepare(inbound("POST", "/api/v2/cancel_order/", "id=42"))
    assert p.category is Category.CANCEL
    p = EXCHANGE.prepare(inbound("POST", "/api/v2/order_status/", "client_order_id=c-1"))
    assert p.category is Category.READ and p.client_order_id == "c-1"
    p = EXCHANGE.prepare(inbound("POST", "/api/v2/open_orders/btcusd/"))
    assert p.intents[0].symbol == "btcusd"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v2/btc_withdrawal/", "/api/v2/eth_withdrawal/", "/api/v2/doge_withdrawal/",
        "/api/v2/withdrawal/open/", "/api/v2/withdrawal/cancel/", "/api/v2/withdrawal-requests/",
        "/api/v2/transfer-to-main/", "/api/v2/transfer-from-main/",
        "/api/v2/revoke_all_api_keys/", "/api/v2/travel_rule/contacts/",
        "/api/v2/travel_rule/utxo/xpub_registrations/", "/api/v2/btc_address/",
        "/api/v2/replace_order/",
    ],
)
def test_bitstamp_dangerous_and_unknown_endpoints_forbidden(path: str) -> None:
    with pytest.raises(EndpointForbidden):
        EXCHANGE.prepare(inbound("POST", path, "amount=1"))


@pytest.mark.parametrize(
    ("path", "body", "query"),
    [
        ("/api/v2/buy/btcusd/", "amount=1&amount=2&price=1", ""),
        ("/api/v2/buy/btcusd/", "amount=1&price=1", "amount=1"),
        ("/api/v2/buy/btcusd/", "price=1", ""),
        ("/api/v2/buy/btcusd/", "amount=1", ""),
        ("/api/v2/buy/btcusd/", "amount=1e3&price=1", ""),
        ("/api/v2/buy/btcusd/", "amount=-1&price=1", ""),
        ("/api/v2/buy/btcusd/", "amount=%EF%BC%91&price=1", ""),
        ("/api/v2/buy/btcusd/", "amount=1&price=1&limit_price=2", ""),
        ("/api/v2/buy/btcusd/", "amount=1&price=1&ioc_order=True&fok_order=True", ""),
        ("/api/v2/buy/btcusd/", "amount=1&price=1&ioc_order=yes", ""),
        ("/api/v2/buy/btcusd/", "amount=1&price=1&client_order_id=a%20b", ""),
        ("/api/v2/buy/btcusd/", "amount=1&price=1&evil=1", ""),
        ("/api/v2/buy/market/btcusd/", "amount=1&price=1", ""),
        ("/api/v2/buy/instant/btcusd/", "amount=1&amount_in_counter=True", ""),
        ("/api/v2/buy/BTCUSD/", "amount=1&price=1", ""),
        ("/api/v2/buy/market/", "amount=1&price=1", ""),
        ("/api/v2/buy/btcusd", "amount=1&price=1", ""),
        ("/api/v2/buy/btcusd//", "amount=1&price=1", ""),
        ("/api/v2/buy/../sell/btcusd/", "amount=1&price=1", ""),
        ("/api/v2/Buy/btcusd/", "amount=1&price=1", ""),
        ("/api/v2/cancel_order/", "id=1&client_order_id=x", ""),
        ("/api/v2/cancel_order/", "id=abc", ""),
        ("/api/v2/account_balances/", "key=k&signature=s&nonce=1", ""),
    ],
)
def test_bitstamp_ambiguous_requests_are_bad_requests(path: str, body: str, query: str) -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("POST", path, body, query=query))


def test_bitstamp_legacy_form_auth_refused_clearly() -> None:
    with pytest.raises(BadRequest, match="legacy"):
        EXCHANGE.prepare(inbound("POST", "/api/v2/balance/", "key=k&signature=S&nonce=1"))


def test_bitstamp_has_no_testnet_and_hmac_only() -> None:
    assert EXCHANGE.base_url("live") == "https://www.bitstamp.net"
    with pytest.raises(ValueError, match="testnet"):
        EXCHANGE.base_url("testnet")
    with pytest.raises(ValueError, match="HMAC"):
        EXCHANGE.load_credentials({"api_key": Secret(KEY), "api_secret": Secret(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")}, 1)


def test_bitstamp_credentials_repr_hides_secret() -> None:
    assert SECRET not in repr(creds()) and SECRET not in str(creds())
