"""Deribit signing against the published vector and ccxt 4.5.90, canonicalisation and intents."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from proxy.errors import BadRequest, EndpointForbidden, InstrumentError
from proxy.exchanges.base import Credentials
from proxy.exchanges.deribit import EXCHANGE
from proxy.model.request import Action, Category, Inbound, Stamp
from proxy.model.sensitive import Secret

# SPECS.md "Test vectors" #4 (Deribit's own documentation).
VEC_ID, VEC_SECRET = "AMANDA", "AMANDASECRECT"
VEC_TS, VEC_NONCE = 1576074319000, "1iqt2wls"
VEC_SIG = "56590594f97921b09b18f166befe0d1319b198bbcdad7ca73382de2f88fe9aa1"
TS = 1_700_000_000_123
UNIQUE = "9b2f0c4e-1d3a-4f5b-8c6d-7e8f9a0b1c2d"


def creds(client_id: str = VEC_ID, secret: str = VEC_SECRET) -> Credentials:
    return EXCHANGE.load_credentials(
        {"api_key": Secret(client_id), "api_secret": Secret(secret)}, 1)


def inbound(path: str, query: str = "", method: str = "GET",
            headers: tuple[tuple[str, str], ...] = (), body: bytes = b"") -> Inbound:
    return Inbound(method, path, query.encode(), headers, body)


def test_deribit_published_vector() -> None:
    """The documented client signature: HMAC-SHA256 over ``ts\\nnonce\\n`` (empty data)."""
    key = creds().key
    assert key.hexdigest(f"{VEC_TS}\n{VEC_NONCE}\n".encode()) == VEC_SIG  # type: ignore[union-attr]


def test_deribit_request_signature_follows_documented_formula() -> None:
    prepared = EXCHANGE.prepare(inbound("/api/v2/private/get_account_summary", "currency=BTC"))
    out = EXCHANGE.sign(prepared, creds(), Stamp(VEC_TS, 0, UNIQUE), "www.deribit.com")
    nonce = UNIQUE.replace("-", "")
    uri = "/api/v2/private/get_account_summary?currency=BTC"
    string = f"{VEC_TS}\n{nonce}\nGET\n{uri}\n\n"
    sig = hmac.new(VEC_SECRET.encode(), string.encode(), hashlib.sha256).hexdigest()
    assert out.path_and_query == uri and out.body == b""
    assert dict(out.headers) == {
        "Authorization": f"deri-hmac-sha256 id={VEC_ID},ts={VEC_TS},sig={sig},nonce={nonce}"}


def _ccxt_sign(path: str, params: dict[str, Any]) -> Any:
    ex = ccxt.deribit({"apiKey": VEC_ID, "secret": VEC_SECRET})
    ex.milliseconds = lambda: TS
    ex.nonce = lambda: uuid.UUID(UNIQUE).hex
    return ex.sign(path, ["private"], "GET", dict(params))


CASES = [
    ("buy", {"instrument_name": "BTC-PERPETUAL", "amount": "100", "type": "limit",
             "price": "50000", "label": "bot-1"}),
    ("sell", {"instrument_name": "ETH-PERPETUAL", "amount": "10", "type": "market",
              "label": "bot-2", "reduce_only": "true"}),
    ("buy", {"instrument_name": "BTC_USDC-PERPETUAL", "amount": "0.01", "type": "limit",
             "price": "50000.5", "label": "bot:3", "post_only": "true",
             "time_in_force": "good_til_cancelled"}),
    ("cancel", {"order_id": "ETH-349224"}),
    ("get_order_state", {"order_id": "ETH-349224"}),
    ("get_open_orders_by_currency", {"currency": "BTC"}),
    ("get_open_orders_by_instrument", {"instrument_name": "BTC-PERPETUAL"}),
    ("get_account_summaries", {}),
    ("get_account_summary", {"currency": "BTC"}),
]


@pytest.mark.parametrize(("method", "params"), CASES)
def test_deribit_request_through_proxy_is_byte_identical_to_ccxt(
    method: str, params: dict[str, str]
) -> None:
    want = _ccxt_sign(method, params)
    target = str(want["url"]).removeprefix("https://www.deribit.com")
    path, _, query = target.partition("?")
    bot = inbound(path, query, headers=(("authorization", want["headers"]["Authorization"]),))
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds(), Stamp(TS, 0, UNIQUE), "www.deribit.com")
    assert out.path_and_query == target
    assert out.body == b"" and want["body"] is None
    assert dict(out.headers) == want["headers"]


def test_deribit_bot_auth_replaced_and_access_token_stripped() -> None:
    bot = inbound("/api/v2/private/get_account_summaries", "access_token=stolen",
                  headers=(("authorization", "Bearer stolen"),))
    out = EXCHANGE.sign(EXCHANGE.prepare(bot), creds(), Stamp(TS, 0, UNIQUE), "h")
    assert out.path_and_query == "/api/v2/private/get_account_summaries"
    assert [k for k, _ in out.headers] == ["Authorization"]
    assert "stolen" not in dict(out.headers)["Authorization"]


def test_deribit_public_unsigned() -> None:
    prepared = EXCHANGE.prepare(inbound("/api/v2/public/get_instruments", "currency=BTC"))
    assert prepared.category is Category.PUBLIC
    out = EXCHANGE.sign(prepared, creds(), Stamp(TS, 0, UNIQUE), "h")
    assert out.headers == () and out.path_and_query.endswith("?currency=BTC")


def test_deribit_inverse_order_intent_amount_is_usd() -> None:
    prepared = EXCHANGE.prepare(inbound(
        "/api/v2/private/buy",
        "instrument_name=BTC-PERPETUAL&amount=100&type=limit&price=50000&label=bot-1"))
    (intent,) = prepared.intents
    assert prepared.category is Category.TRADE and prepared.endpoint.action is Action.PLACE
    assert (intent.symbol, intent.side, intent.order_type) == ("BTC-PERPETUAL", "buy", "limit")
    assert intent.quantity == Decimal("100") and intent.price == Decimal("50000")
    assert intent.time_in_force == "good_til_cancelled"  # Deribit's default, applied
    assert intent.client_order_id == "bot-1" and prepared.client_order_id == "bot-1"


def _instrument_answer(name: str, kind: str, style: str) -> bytes:
    """Shaped as DRB-DOC public/get_instrument's example answer."""
    return json.dumps({"jsonrpc": "2.0", "id": 2, "result": {
        "tick_size": 2.5, "settlement_currency": "BTC", "quote_currency": "USD", "kind": kind,
        "is_active": True, "instrument_name": name, "contract_size": 10, "base_currency": "BTC",
        "counter_currency": "USD", "instrument_type": style, "min_trade_amount": 10}}).encode()


def test_deribit_amounts_count_usd_on_inverse_and_coin_on_linear() -> None:
    """DRB-DOC amount: "For perpetual and inverse futures the amount is in USD units. For
    options and linear futures it is the underlying base currency coin"."""
    inverse = EXCHANGE.parse_instrument(
        "BTC-PERPETUAL", "", _instrument_answer("BTC-PERPETUAL", "future", "reversed"))
    linear = EXCHANGE.parse_instrument(
        "BTC_USDC-PERPETUAL", "", _instrument_answer("BTC_USDC-PERPETUAL", "future", "linear"))
    option = EXCHANGE.parse_instrument(
        "BTC-27JUN25-100000-C", "", _instrument_answer("BTC-27JUN25-100000-C", "option", "reversed"))
    assert inverse.notional(Decimal(100), Decimal(50000)) == Decimal(100)
    assert linear.notional(Decimal("0.5"), Decimal(60000)) == Decimal("30000.0")
    assert option.kind == "option" and option.notional(Decimal(1), Decimal(1)) is None
    with pytest.raises(InstrumentError):  # an answer for another instrument is never used
        EXCHANGE.parse_instrument("ETH-PERPETUAL", "", _instrument_answer("BTC-PERPETUAL", "future", "reversed"))
    out = EXCHANGE.instrument_request("BTC-PERPETUAL", "")
    assert out.path_and_query == "/api/v2/public/get_instrument?instrument_name=BTC-PERPETUAL"


def test_deribit_trigger_and_self_pricing_orders() -> None:
    (intent,) = EXCHANGE.prepare(inbound(
        "/api/v2/private/sell",
        "instrument_name=BTC-PERPETUAL&amount=10&type=stop_market&trigger_price=45000")).intents
    assert intent.price is None and intent.prices == (Decimal(45000),)
    for query in ("instrument_name=BTC-PERPETUAL&amount=10&type=trailing_stop&trigger_offset=100",
                  "instrument_name=BTC-27JUN25-100000-C&amount=1&type=limit&price=0.5&advanced=implv"):
        with pytest.raises(BadRequest):
            EXCHANGE.prepare(inbound("/api/v2/private/buy", query))


def test_deribit_market_order_default_type_and_no_price() -> None:
    (intent,) = EXCHANGE.prepare(inbound(
        "/api/v2/private/buy", "instrument_name=BTC-27JUN25-100000-C&amount=1&type=market"
    )).intents
    assert intent.order_type == "market" and intent.price is None and intent.notional is None


def test_deribit_cancel_by_label_intent() -> None:
    prepared = EXCHANGE.prepare(inbound("/api/v2/private/cancel_by_label", "label=bot-1"))
    assert prepared.category is Category.CANCEL
    assert prepared.intents[0].client_order_id == "bot-1"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v2/public/auth", "/api/v2/public/exchange_token", "/api/v2/public/fork_token",
        "/api/v2/private/withdraw", "/api/v2/private/cancel_withdrawal",
        "/api/v2/private/submit_transfer_to_subaccount", "/api/v2/private/submit_transfer_to_user",
        "/api/v2/private/submit_transfer_between_subaccounts", "/api/v2/private/create_api_key",
        "/api/v2/private/list_api_keys", "/api/v2/private/reset_api_key",
        "/api/v2/private/change_scope_in_api_key", "/api/v2/private/create_subaccount",
        "/api/v2/private/add_to_address_book", "/api/v2/private/get_address_book",
        "/api/v2/private/edit", "/api/v2/private/unknown_method", "/api/v2/private",
    ],
)
def test_deribit_dangerous_and_unknown_endpoints_forbidden(path: str) -> None:
    with pytest.raises(EndpointForbidden):
        EXCHANGE.prepare(inbound(path))


def test_deribit_json_rpc_post_is_not_accepted() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"private/withdraw","params":{}}'
    for path in ("/api/v2", "/api/v2/private/buy"):
        with pytest.raises((EndpointForbidden, BadRequest)):
            EXCHANGE.prepare(inbound(path, method="POST", body=body,
                                     headers=(("content-type", "application/json"),)))


BUY = "/api/v2/private/buy"
BASE = "instrument_name=BTC-PERPETUAL&type=limit&price=50000"


@pytest.mark.parametrize(
    ("path", "query"),
    [
        (BUY, f"{BASE}&amount=10&amount=20"),
        (BUY, f"{BASE}&amount=1e3"),
        (BUY, f"{BASE}&amount=NaN"),
        (BUY, f"{BASE}&amount=-10"),
        (BUY, f"{BASE}&amount=010"),
        (BUY, f"{BASE}&amount=%EF%BC%91"),
        (BUY, f"{BASE}&contracts=1"),
        (BUY, BASE),
        (BUY, "instrument_name=BTC-PERPETUAL&type=limit&amount=10"),
        (BUY, "instrument_name=BTC-PERPETUAL&type=market&amount=10&price=1"),
        (BUY, f"{BASE}&amount=10&type=limit"),
        (BUY, "instrument_name=btc-perpetual&amount=10&type=market"),
        (BUY, "instrument_name=BTC-PERPETUAL&amount=10&type=LIMIT&price=1"),
        (BUY, f"{BASE}&amount=10&advanced=usd"),
        (BUY, f"{BASE}&amount=10&post_only=1"),
        (BUY, f"{BASE}&amount=10&label=" + "x" * 65),
        (BUY, f"{BASE}&amount=10&label=a%20b"),
        (BUY, f"{BASE}&amount=10&time_in_force=gtc"),
        (BUY, f"{BASE}&amount=10%ZZ"),
        ("/api/v2/private/Buy", f"{BASE}&amount=10"),
        ("/api/v2/private/../private/buy", f"{BASE}&amount=10"),
        ("/api/v2//private/buy", f"{BASE}&amount=10"),
    ],
)
def test_deribit_ambiguous_requests_are_bad_requests(path: str, query: str) -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound(path, query))


def test_deribit_get_with_body_refused() -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound("/api/v2/private/get_account_summaries", body=b"x=1",
                                 headers=(("content-type", "application/x-www-form-urlencoded"),)))


def test_deribit_credentials_hide_secret_and_refuse_pem() -> None:
    c = creds(secret="s3cr3t-value-xyz")
    assert "s3cr3t" not in repr(c) and "s3cr3t" not in str(c)
    pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ValueError, match="api_secret") as info:
        creds(secret=pem)
    assert "AAAA" not in str(info.value)


def test_deribit_base_urls() -> None:
    assert EXCHANGE.base_url("live") == "https://www.deribit.com"
    assert EXCHANGE.base_url("testnet") == "https://test.deribit.com"
    assert EXCHANGE.nonce_unit is None
