"""What generic code asks of Binance: its declared capabilities
(:class:`proxy.exchanges.capabilities.Capabilities`), each stated or explicitly none.

Pure, like the rest of the exchange module: data and parsers of documented answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
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
# The "Weight" of each endpoint in the spot REST docs (binance-spot-api-docs rest-api.md), and
# the REQUEST_WEIGHT limit of 6,000 per minute (GET /api/v3/exchangeInfo "rateLimits"), counted
# per IP address. The /sapi reads' IP weights come from ccxt 4.5.90's cost table (binance.py
# lines 302-498: cost 0.1 per weight unit). A request not listed costs the heaviest, 250.

WEIGHT_PER_MINUTE = 6000
_HEAVIEST = 250  # GET /api/v3/depth with a limit of 1001-5000
Params = Mapping[str, str]


def _symbol_count(params: Params) -> int | None:
    """How many symbols ``symbols`` (a JSON array) names; None: absent or unreadable."""
    raw = params.get("symbols")
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except ValueError:
        return None
    return len(names) if isinstance(names, list) and names else None


def _by_symbols(one: int, none: int, bands: tuple[tuple[int, int], ...] = ()) -> Callable[[Params], int]:
    """``symbol``: ``one``; ``symbols``: the band its count falls in, else ``none``; neither: ``none``."""
    def weight(params: Params) -> int:
        if "symbol" in params:
            return one
        count = _symbol_count(params)
        return none if count is None else next((w for bound, w in bands if count <= bound), none)
    return weight


def _per_symbol(params: Params) -> int:
    """``ticker`` and ``ticker/tradingDay``: "4 for each requested symbol ... will cap at 200
    once the number of symbols in the request is more than 50"; none named: the cap."""
    if "symbol" in params:
        return 4
    count = _symbol_count(params)
    return 200 if count is None else min(4 * count, 200)


def _depth(params: Params) -> int:
    text = params.get("limit", "100")  # default 100
    limit = int(text) if text.isdigit() else 5000
    return next((w for bound, w in ((100, 5), (500, 25), (1000, 50), (5000, 250)) if limit <= bound), 250)


def _with(name: str, present: int, absent: int) -> Callable[[Params], int]:
    return lambda params: present if name in params else absent


def _commission_rates(params: Params) -> int:
    return 20 if params.get("computeCommissionRates", "").lower() == "true" else 1


_WEIGHTS: Mapping[tuple[str, str], int | Callable[[Params], int]] = {
    ("GET", "/api/v3/ping"): 1,
    ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/depth"): _depth,
    ("GET", "/api/v3/trades"): 25,
    ("GET", "/api/v3/historicalTrades"): 25,
    ("GET", "/api/v3/aggTrades"): 4,
    ("GET", "/api/v3/klines"): 2,
    ("GET", "/api/v3/uiKlines"): 2,
    ("GET", "/api/v3/avgPrice"): 2,
    ("GET", "/api/v3/ticker/24hr"): _by_symbols(2, 80, ((20, 2), (100, 40))),
    ("GET", "/api/v3/ticker/price"): _by_symbols(2, 4),
    ("GET", "/api/v3/ticker/bookTicker"): _by_symbols(2, 4),
    ("GET", "/api/v3/ticker"): _per_symbol,
    ("GET", "/api/v3/ticker/tradingDay"): _per_symbol,
    ("GET", "/api/v3/account"): 20,
    ("GET", "/api/v3/order"): 4,
    ("GET", "/api/v3/openOrders"): _with("symbol", 6, 80),
    ("GET", "/api/v3/allOrders"): 20,
    ("GET", "/api/v3/myTrades"): _with("orderId", 5, 20),
    ("GET", "/api/v3/orderList"): 4,
    ("GET", "/api/v3/allOrderList"): 20,
    ("GET", "/api/v3/openOrderList"): 6,
    ("GET", "/api/v3/rateLimit/order"): 40,
    ("GET", "/api/v3/myPreventedMatches"): _with("preventedMatchId", 2, 20),
    ("GET", "/api/v3/myAllocations"): 20,
    ("GET", "/api/v3/account/commission"): 20,
    ("GET", "/sapi/v1/account/apiRestrictions"): 1,
    ("GET", "/sapi/v1/capital/config/getall"): 10,
    ("GET", "/sapi/v1/asset/tradeFee"): 1,
    ("GET", "/sapi/v1/margin/allPairs"): 1,
    ("GET", "/sapi/v1/margin/isolated/allPairs"): 10,
    ("POST", "/api/v3/order"): 1,
    ("POST", "/api/v3/order/test"): _commission_rates,
    ("POST", "/api/v3/order/cancelReplace"): 1,
    ("DELETE", "/api/v3/order"): 1,
    ("DELETE", "/api/v3/openOrders"): 1,
    ("DELETE", "/api/v3/orderList"): 1,
}


def request_weight(method: str, path: str, query: str, body: bytes) -> int:
    """What one request costs. Binance reads parameters from the query string and the form
    body alike, so both are consulted."""
    weight = _WEIGHTS.get((method, path))
    if weight is None:
        return _HEAVIEST
    if isinstance(weight, int):
        return weight
    if body and method != "GET":
        query = f"{query}&{body.decode('latin-1')}" if query else body.decode("latin-1")
    return weight(dict(parse_qsl(query, keep_blank_values=True)))


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
    weights=Weights(request_weight, frozenset(_WEIGHTS), WEIGHT_PER_MINUTE),
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
