"""What generic code asks of Kraken: its declared capabilities
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
from proxy.exchanges.kraken.stream import STREAM
from proxy.exchanges.order_ids import EVERY, OrderIds
from proxy.exchanges.refusals import (
    ErrorFormat,
    RefusalBody,
    RefusalView,
    json_or_none,
    reason_text,
    render_native,
)
from proxy.exchanges.tickers import Quote, Ticker

CLIENT_ORDER_ID_RULES = ClientOrderIdRules("cl_ord_id", 18)
#: The User-Agent the proxy sends on every request to the exchange (ticker included).
USER_AGENT = "exchange-signing-proxy"

# ---------------------------------------------------------------- reference price (ticker)
# GET /0/public/Ticker?pair=P -> result.<pair id>.c[0] (the last trade)


def _ticker_quote(data: Any, _symbol: str, _market: str) -> Quote:
    answer = tickers.obj(data, "kraken ticker")
    if answer.get("error") != []:
        raise TickerError("kraken ticker: error is not empty")
    result = tickers.obj(answer.get("result"), "kraken result")
    # Kraken answers under its own pair id (XBTUSD -> XXBTZUSD): exactly one entry is trusted.
    if len(result) != 1:
        raise TickerError("kraken ticker: expected exactly one pair")
    entry = tickers.obj(next(iter(result.values())), "kraken pair")
    last = entry.get("c")
    if not isinstance(last, list) or not last:
        raise TickerError("kraken ticker: no last trade (c)")
    return Quote(tickers.price(last[0], "kraken c[0]"))


TICKER = Ticker(re.compile(r"[A-Z0-9]{2,24}"),
                lambda s, _: f"/0/public/Ticker?pair={tickers.q(s)}", _ticker_quote,
                headers=(("user-agent", USER_AGENT),))

# ---------------------------------------------------------------- request weights
# The REST "API call counter" (docs.kraken.com, Spot REST rate limits): "Ledger/trade history
# calls increase the counter by 2. All other API calls increase this counter by 1 (except
# AddOrder, CancelOrder which operate on a different limiter)": the matching engine's per-pair
# counter, not this one (0 here). Public calls are limited per IP, not by a key's counter: 1
# each, so an account's budget bounds them too. The counter's limit depends on the account's
# verification tier: no default budget. A request not listed costs the heaviest, 2.

_WEIGHTS = {
    **{("GET", f"/0/public/{p}"): 1 for p in (
        "Time", "SystemStatus", "Assets", "AssetPairs", "Ticker", "OHLC", "Depth", "Trades", "Spread")},
    **{("POST", f"/0/private/{p}"): 2 for p in ("Ledgers", "QueryLedgers", "TradesHistory", "QueryTrades")},
    **{("POST", f"/0/private/{p}"): 1 for p in (
        "Balance", "BalanceEx", "TradeBalance", "OpenOrders", "ClosedOrders", "QueryOrders",
        "OpenPositions", "TradeVolume", "OrderAmends", "AddOrderBatch", "CancelOrderBatch", "CancelAll",
        "CancelAllOrdersAfter", "GetWebSocketsToken")},
    ("POST", "/0/private/AddOrder"): 0,
    ("POST", "/0/private/CancelOrder"): 0,
}


def request_weight(method: str, path: str, _query: str, _body: bytes) -> int:
    return _WEIGHTS.get((method, path), 2)


# ---------------------------------------------------------------- order lookups
# What an answer to the module's order_lookups says about the order (proxy.pipeline.lookup).


def lookup_result(status: int, body: bytes) -> Lookup:
    try:
        data = parse_json_object(body, "lookup")
    except BadRequest:
        return Lookup.UNKNOWN
    result = data.get("result")
    if status != 200 or data.get("error") != [] or not isinstance(result, dict):
        return Lookup.UNKNOWN
    orders = result.get("open", result.get("closed"))
    if not isinstance(orders, dict):
        return Lookup.UNKNOWN
    return Lookup.FOUND if orders else Lookup.ABSENT


# ---------------------------------------------------------------- the declaration

# ---------------------------------------------------------------- errors
#: The proxy's own refusals (docs/interface.md "Refusals"): proxy code -> the Kraken error string that
#: ccxt 4.5.90's kraken maps to the class a bot should see; None: none maps to it, but ccxt maps
#: the HTTP status to it, so the answer is plain text and ccxt falls back to the status.
REFUSALS: dict[str, str | None] = {
    "unauthenticated": "EAPI:Invalid key", "forbidden": "EGeneral:Permission denied",
    "endpoint_forbidden": "EGeneral:Permission denied", "policy_denied": "EGeneral:Permission denied",
    "bad_request": "EGeneral:Invalid arguments", "too_large": "EGeneral:Invalid arguments",
    "idempotency_conflict": "EOrder:Invalid order", "rate_limited": "EGeneral:Rate limit exceeded",
    "account_paused": "EService:Unavailable", "not_ready": "EService:Unavailable",
    "upstream_error": "EService:Unavailable", "upstream_timeout": None,
}


def _render(refusal: RefusalView) -> RefusalBody:
    """``{"error": [...], "result": {}}``, the error ccxt knows first ("EAPI:Rate limit
    exceeded" would be DDoSProtection; any other ":Rate limit exceeded" is RateLimitExceeded)."""
    return render_native(refusal, REFUSALS, lambda error: {
        "error": [error, f"EGeneral:{refusal.text}"], "result": {}})


def _reason(body: bytes) -> str | None:
    data = json_or_none(body)
    errors = data.get("error") if isinstance(data, dict) else None
    return reason_text("; ".join(map(str, errors))) if isinstance(errors, list) else None


ERRORS = ErrorFormat(("/0/",), REFUSALS, _render, _reason)


CAPABILITIES = Capabilities(
    server_time=None,  # nonce-based: no timestamp window
    ticker=TICKER,
    key_permissions=None,  # no endpoint that reads a key's own permissions
    key_check=SignedRead("POST", "/0/private/Balance",
                         ok=lambda data: isinstance(data, dict) and not data.get("error")),
    key_refusal_codes=frozenset({"EAPI:Invalid key", "EAPI:Invalid signature"}),
    weights=Weights(request_weight, frozenset(_WEIGHTS), None),
    nonce_rejections=(b"EAPI:Invalid nonce",),  # answered with HTTP 200
    ip_wide_limits=False,
    transit_signing=True,
    receive_window=False,
    testnet_switches=(),  # no spot testnet
    secret_fields=("api_key", "api_secret"),
    client_order_ids=CLIENT_ORDER_ID_RULES,
    # AddOrder answers {"result": {"txid": ["O..."]}}; AddOrderBatch {"result": {"orders":
    # [{"txid"}]}}
    order_ids=OrderIds(("result", "txid", 0), ("result", "orders", EVERY, "txid")),
    private_stream=STREAM,
    errors=ERRORS,
)
