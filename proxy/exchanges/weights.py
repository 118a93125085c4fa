"""The exchanges' published request weights, as data (pure: no I/O, no clock).

An account's outbound budget (``[[accounts]] weight_per_minute``) spends these per request so
one greedy bot cannot get a shared key rate-limited or banned. Anything not listed costs 1.

Sources: Binance spot REST docs, "Weight" of each endpoint, and the ``REQUEST_WEIGHT`` limit of
6,000 per minute (GET /api/v3/exchangeInfo ``rateLimits``); Kraken's REST "API call counter"
(ledger and trade-history queries cost 2, everything else 1). The other exchanges publish
per-endpoint request rates (Bybit, OKX, Bitget: N requests per second per endpoint and UID),
not weights: there every request costs 1 and no budget applies unless the account sets one.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

#: The budget an account gets unless it sets ``weight_per_minute`` (None: no default budget).
DEFAULT_WEIGHT_PER_MINUTE: Mapping[str, int] = {"binance": 6000}

# (method, path) -> (weight with "symbol", weight without); equal when symbol does not matter.
_BINANCE: Mapping[tuple[str, str], tuple[int, int]] = {
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
_BINANCE_DEPTH = ((100, 5), (500, 25), (1000, 50), (5000, 250))

_KRAKEN_COST_2 = frozenset({
    "/0/private/Ledgers", "/0/private/QueryLedgers", "/0/private/TradesHistory", "/0/private/QueryTrades",
})


def _params(query: str) -> dict[str, str]:
    return dict(parse_qsl(query, keep_blank_values=True))


def _binance(method: str, path: str, query: str) -> int:
    if (method, path) == ("GET", "/api/v3/depth"):
        limit_text = _params(query).get("limit", "100")
        limit = int(limit_text) if limit_text.isdigit() else 5000
        return next((w for bound, w in _BINANCE_DEPTH if limit <= bound), 250)
    pair = _BINANCE.get((method, path))
    if pair is None:
        return 1
    with_symbol, without = pair
    if with_symbol == without:
        return with_symbol
    params = _params(query)
    return with_symbol if ("symbol" in params or "symbols" in params) else without


def request_weight(exchange: str, method: str, path: str, query: str = "", body: bytes = b"") -> int:
    """What one request costs against the account's budget (>= 1). Binance reads parameters
    from the query string and the form body alike, so both are consulted."""
    if exchange == "binance":
        if body and method != "GET":
            query = f"{query}&{body.decode('latin-1')}" if query else body.decode("latin-1")
        return _binance(method, path, query)
    if exchange == "kraken" and path in _KRAKEN_COST_2:
        return 2
    return 1
