"""What generic code asks of Deribit: its declared capabilities
(:class:`proxy.exchanges.capabilities.Capabilities`), each stated or explicitly none.

Pure, like the rest of the exchange module: data and parsers of documented answers.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.errors import BadRequest, TickerError
from proxy.exchanges import tickers
from proxy.exchanges.base import parse_json_object
from proxy.exchanges.capabilities import Capabilities, SignedRead, Weights
from proxy.exchanges.client_order_ids import ClientOrderIdRules, Lookup
from proxy.exchanges.deribit.stream import STREAM
from proxy.exchanges.order_ids import OrderIds
from proxy.exchanges.refusals import (
    ErrorFormat,
    RefusalBody,
    RefusalView,
    json_or_none,
    reason_text,
    render_native,
)
from proxy.exchanges.server_time import ServerTime
from proxy.exchanges.tickers import Quote, Ticker

CLIENT_ORDER_ID_RULES = ClientOrderIdRules("label", 64)

# ---------------------------------------------------------------- reference price (ticker)
# GET /api/v2/public/ticker?instrument_name=I -> result.last_price, stamped result.timestamp


def _ticker_quote(data: Any, symbol: str, _market: str) -> Quote:
    result = tickers.obj(tickers.obj(data, "deribit ticker").get("result"), "deribit result")
    if result.get("instrument_name") != symbol:
        raise TickerError("deribit ticker: the answer is for another instrument")
    if result.get("state", "open") != "open":
        raise TickerError("deribit ticker: the instrument is not open")
    at = tickers.epoch_ms(result["timestamp"]) if "timestamp" in result else None
    return Quote(tickers.price(result.get("last_price"), "deribit last_price"), at)


TICKER = Ticker(re.compile(r"[A-Z0-9]{1,10}(?:_[A-Z0-9]{1,10})?(?:-[A-Z0-9]{1,12}){0,3}"),
                lambda s, _: f"/api/v2/public/ticker?instrument_name={tickers.q(s)}", _ticker_quote)

# ---------------------------------------------------------------- order lookups
# What an answer to the module's order_lookups says about the order (proxy.pipeline.lookup).


def lookup_result(status: int, body: bytes) -> Lookup:
    try:
        data = parse_json_object(body, "lookup")
    except BadRequest:
        return Lookup.UNKNOWN
    result = data.get("result")
    if status != 200 or "error" in data or not isinstance(result, list):
        return Lookup.UNKNOWN
    return Lookup.FOUND if result else Lookup.ABSENT


# ---------------------------------------------------------------- request weights
# Credits (support.deribit.com "Rate Limits"): every non-matching-engine request costs 500
# credits from a pool of 50,000 refilled at 10,000 a second (a weight_per_minute of 600000
# matches it; no default budget). Matching-engine requests (buy, sell, edit, the cancels,
# close_position) are limited per tier in requests per second, not from that pool: 0 here.
# A request not listed costs the heaviest, 500.

_PUBLIC = """get_time test status get_currencies get_instruments get_instrument ticker get_order_book
    get_order_book_by_instrument_id get_last_trades_by_instrument get_last_trades_by_currency
    get_index_price get_index_price_names get_book_summary_by_currency get_book_summary_by_instrument
    get_contract_size get_tradingview_chart_data get_funding_rate_history get_funding_rate_value
    get_historical_volatility get_volatility_index_data get_delivery_prices get_funding_chart_data
    get_mark_price_history get_supported_index_names"""
_PRIVATE = """get_account_summary get_account_summaries get_positions get_position get_order_state
    get_order_state_by_label get_open_orders get_open_orders_by_currency get_open_orders_by_instrument
    get_open_orders_by_label get_order_history_by_currency get_order_history_by_instrument
    get_user_trades_by_currency get_user_trades_by_instrument get_user_trades_by_order
    get_user_trades_by_currency_and_time get_user_trades_by_instrument_and_time get_margins
    get_order_margin_by_ids get_settlement_history_by_currency get_settlement_history_by_instrument
    get_transaction_log get_trigger_order_history"""
_MATCHING_ENGINE = """buy sell edit cancel cancel_all cancel_all_by_currency cancel_all_by_instrument
    cancel_all_by_kind_or_type cancel_by_label close_position"""
_WEIGHTS = {
    **{("GET", f"/api/v2/public/{m}"): 500 for m in _PUBLIC.split()},
    **{("GET", f"/api/v2/private/{m}"): 500 for m in _PRIVATE.split()},
    **{("GET", f"/api/v2/private/{m}"): 0 for m in _MATCHING_ENGINE.split()},
}


def request_weight(method: str, path: str, _query: str, _body: bytes) -> int:
    return _WEIGHTS.get((method, path), 500)


# ---------------------------------------------------------------- the declaration

# ---------------------------------------------------------------- errors
#: The proxy's own refusals (docs/interface.md "Refusals"): proxy code -> the Deribit error code that
#: ccxt 4.5.90's deribit maps to the class a bot should see; None: none maps to it, but ccxt maps
#: the HTTP status to it, so the answer is plain text and ccxt falls back to the status.
REFUSALS: dict[str, int | None] = {
    "unauthenticated": 10000, "forbidden": 11042, "endpoint_forbidden": 11042, "policy_denied": 11042,
    "bad_request": 11029, "too_large": 11029, "idempotency_conflict": 10025, "rate_limited": None,
    "account_paused": 10040, "not_ready": 10040, "upstream_error": 10040, "upstream_timeout": None,
}


def _render(refusal: RefusalView) -> RefusalBody:
    """A JSON-RPC error. Deribit's too_many_requests (10028) is DDoSProtection in ccxt, so a
    rate limit is text: ccxt maps the 429 itself to RateLimitExceeded."""
    return render_native(refusal, REFUSALS, lambda code: {"jsonrpc": "2.0", "error": {
        "code": code, "message": refusal.text, "data": refusal.fields()}})


def _reason(body: bytes) -> str | None:
    data = json_or_none(body)
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    detail = error.get("data")
    return reason_text(error.get("code"), error.get("message"),
                       detail.get("reason") if isinstance(detail, dict) else None)


ERRORS = ErrorFormat(("/api/v2/private/", "/api/v2/public/"), REFUSALS, _render, _reason)


CAPABILITIES = Capabilities(
    # GET /api/v2/public/get_time -> result (ms integer)
    server_time=ServerTime("/api/v2/public/get_time", ("result",)),
    ticker=TICKER,
    key_permissions=None,  # no endpoint that reads a key's own permissions
    key_check=SignedRead("GET", "/api/v2/private/get_account_summary", query=b"currency=BTC",
                         ok=lambda data: isinstance(data, dict) and "error" not in data),
    key_refusal_codes=frozenset({"13004", "13009"}),
    weights=Weights(request_weight, frozenset(_WEIGHTS), None),  # credits
    nonce_rejections=(),  # the signature's nonce is single-use within the timestamp window
    ip_wide_limits=False,
    transit_signing=True,
    receive_window=False,
    testnet_switches=(),  # the testnet is its own host
    secret_fields=("api_key", "api_secret"),
    client_order_ids=CLIENT_ORDER_ID_RULES,
    # private/buy|sell answer {"jsonrpc", "id", "result": {"order": {"order_id"}}}; the envelope's
    # "id" is the JSON-RPC request's, not the order's
    order_ids=OrderIds(("result", "order", "order_id")),
    private_stream=STREAM,
    errors=ERRORS,
)
