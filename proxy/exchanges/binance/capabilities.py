"""What generic code asks of Binance: its declared capabilities
(:class:`proxy.exchanges.capabilities.Capabilities`), each stated or explicitly none.

Pure, like the rest of the exchange module: data and parsers of documented answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from proxy.errors import BadRequest, TickerError
from proxy.exchanges import tickers
from proxy.exchanges.base import parse_json
from proxy.exchanges.binance.stream import STREAM
from proxy.exchanges.capabilities import Capabilities, PermissionProbe, Permissions, SignedRead, Weights
from proxy.exchanges.client_order_ids import ClientOrderIdRules, Lookup
from proxy.exchanges.order_ids import OrderIds
from proxy.exchanges.refusals import ErrorFormat, RefusalBody, RefusalView, exchange_reason, render_native
from proxy.exchanges.server_time import ServerTime
from proxy.exchanges.tickers import Quote, Ticker

CLIENT_ORDER_ID_RULES = ClientOrderIdRules("newClientOrderId", 36)

# ---------------------------------------------------------------- reference price (ticker)
# GET /api/v3/ticker/price?symbol=S -> {"symbol": S, "price": "4.00000200"}


def _ticker_quote(data: Any, symbol: str, _market: str) -> Quote:
    answer = tickers.obj(data, "binance ticker")
    if answer.get("symbol") != symbol:
        raise TickerError("binance ticker: the answer is for another symbol")
    return Quote(tickers.price(answer.get("price"), "binance price"))


TICKER = Ticker(re.compile(r"[A-Z0-9_.\-]{1,30}"),
                lambda s, _: f"/api/v3/ticker/price?symbol={tickers.q(s)}", _ticker_quote)

# ---------------------------------------------------------------- key permissions
# GET /sapi/v1/account/apiRestrictions: enableWithdrawals, ipRestrict


def _permissions(data: Any) -> Permissions:
    withdraw = data["enableWithdrawals"]
    if not isinstance(withdraw, bool):
        raise TypeError("enableWithdrawals")
    ip = data.get("ipRestrict")
    return Permissions(withdraw, ip if isinstance(ip, bool) else None)


# ---------------------------------------------------------------- request weights
# The "Weight" of each endpoint in the spot REST docs, and the REQUEST_WEIGHT limit of 6,000
# per minute (GET /api/v3/exchangeInfo "rateLimits"), counted per IP address. Anything not
# listed costs 1.

WEIGHT_PER_MINUTE = 6000
# (method, path) -> (weight with "symbol", weight without); equal when symbol does not matter.
_WEIGHTS: Mapping[tuple[str, str], tuple[int, int]] = {
    ("GET", "/api/v3/ping"): (1, 1),
    ("GET", "/api/v3/time"): (1, 1),
    ("GET", "/api/v3/exchangeInfo"): (20, 20),
    ("GET", "/api/v3/trades"): (25, 25),
    ("GET", "/api/v3/historicalTrades"): (25, 25),
    ("GET", "/api/v3/aggTrades"): (4, 4),
    ("GET", "/api/v3/klines"): (2, 2),
    ("GET", "/api/v3/uiKlines"): (2, 2),
    ("GET", "/api/v3/avgPrice"): (2, 2),
    ("GET", "/api/v3/ticker/24hr"): (2, 80),
    ("GET", "/api/v3/ticker/price"): (2, 4),
    ("GET", "/api/v3/ticker/bookTicker"): (2, 4),
    ("GET", "/api/v3/account"): (20, 20),
    ("GET", "/api/v3/myTrades"): (20, 20),
    ("GET", "/api/v3/allOrders"): (20, 20),
    ("GET", "/api/v3/order"): (4, 4),
    ("GET", "/api/v3/openOrders"): (6, 80),
    ("GET", "/api/v3/openOrderList"): (6, 6),
    ("GET", "/api/v3/allOrderList"): (20, 20),
    ("GET", "/api/v3/rateLimit/order"): (40, 40),
    ("POST", "/api/v3/order"): (1, 1),
    ("POST", "/api/v3/order/test"): (1, 1),
    ("POST", "/api/v3/order/cancelReplace"): (1, 1),
    ("DELETE", "/api/v3/order"): (1, 1),
    ("DELETE", "/api/v3/openOrders"): (1, 1),
}
# GET /api/v3/depth: weight by the "limit" parameter (default 100).
_DEPTH_WEIGHTS = ((100, 5), (500, 25), (1000, 50), (5000, 250))


def request_weight(method: str, path: str, query: str, body: bytes) -> int:
    """What one request costs. Binance reads parameters from the query string and the form
    body alike, so both are consulted."""
    if body and method != "GET":
        query = f"{query}&{body.decode('latin-1')}" if query else body.decode("latin-1")
    params = dict(parse_qsl(query, keep_blank_values=True))
    if (method, path) == ("GET", "/api/v3/depth"):
        limit_text = params.get("limit", "100")
        limit = int(limit_text) if limit_text.isdigit() else 5000
        return next((w for bound, w in _DEPTH_WEIGHTS if limit <= bound), 250)
    pair = _WEIGHTS.get((method, path))
    if pair is None:
        return 1
    with_symbol, without = pair
    if with_symbol == without:
        return with_symbol
    return with_symbol if ("symbol" in params or "symbols" in params) else without


# ---------------------------------------------------------------- order lookups
# What an answer to the module's order_lookups says about the order (proxy.pipeline.lookup).


def lookup_result(status: int, body: bytes) -> Lookup:
    try:
        data = parse_json(body, "lookup")
    except BadRequest:
        return Lookup.UNKNOWN
    if not isinstance(data, dict):
        return Lookup.UNKNOWN
    if status == 200 and isinstance(data.get("clientOrderId"), str):
        return Lookup.FOUND
    if status == 400 and data.get("code") == -2013:
        return Lookup.ABSENT
    return Lookup.UNKNOWN



PROBE = PermissionProbe("/sapi/v1/account/apiRestrictions", _permissions)

# ---------------------------------------------------------------- the declaration

# ---------------------------------------------------------------- errors
#: The proxy's own refusals (docs/interface.md "Refusals"): proxy code -> the Binance error code that
#: ccxt 4.5.90's binance maps to the class a bot should see; None: none maps to it, but ccxt maps
#: the HTTP status to it, so the answer is plain text and ccxt falls back to the status.
REFUSALS: dict[str, int | None] = {
    "unauthenticated": -1002, "forbidden": -1002, "endpoint_forbidden": -1002, "policy_denied": -1002,
    "bad_request": -1100, "too_large": -1100, "idempotency_conflict": -2010, "rate_limited": -1003,
    "account_paused": None, "not_ready": None, "upstream_error": None, "upstream_timeout": -1007,
}

#: ccxt's binance maps no code to PermissionDenied, only these words in ``msg``
_NO_PRIVILEGE = "this client has no operation privilege here"


def _render(refusal: RefusalView) -> RefusalBody:
    """``{"code": -1002, "msg": ...}``. ccxt raises DDoSProtection for every Binance 429,
    before it reads the body: the nearest it has to RateLimitExceeded."""
    permission = refusal.code in ("forbidden", "endpoint_forbidden", "policy_denied")
    msg = f"{refusal.text}; {_NO_PRIVILEGE}" if permission else refusal.text
    return render_native(refusal, REFUSALS, lambda code: {"code": code, "msg": msg})


def _reason(body: bytes) -> str | None:
    return exchange_reason(body, "code", "msg")


ERRORS = ErrorFormat(("/api/v3/", "/sapi/"), REFUSALS, _render, _reason)


CAPABILITIES = Capabilities(
    server_time=ServerTime("/api/v3/time", ("serverTime",)),  # {"serverTime": ms}
    ticker=TICKER,
    key_permissions=PROBE,
    key_check=SignedRead("GET", PROBE.path, ok=PROBE.readable),
    key_refusal_codes=frozenset({"-2014", "-2015", "-1022"}),
    weights=Weights(request_weight, WEIGHT_PER_MINUTE),
    nonce_rejections=(),  # window-based: no nonce
    # 418 bans (two minutes, escalating to three days) and request weight count per IP
    ip_wide_limits=True,
    transit_signing=True,
    receive_window=True,  # recvWindow, at most 60000 ms
    testnet_switches=(),  # the testnet is its own host
    secret_fields=("api_key", "api_secret"),
    client_order_ids=CLIENT_ORDER_ID_RULES,
    # POST /api/v3/order answers {"orderId": 28, ...}
    order_ids=OrderIds(("orderId",)),
    private_stream=STREAM,
    errors=ERRORS,
)
