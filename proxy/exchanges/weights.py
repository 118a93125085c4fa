"""The exchanges' published request weights, as data (pure: no I/O, no clock).

An account's outbound budget (``[[accounts]] weight_per_minute``) spends these per request so
one greedy bot cannot get a shared key rate-limited or banned. Three exchanges publish a cost
per request, and each of their catalogued endpoints that the proxy forwards has its documented
cost here, parameter-dependent where the exchange's is (``tests/unit/test_weights.py`` fails
for a catalogued endpoint without one):

- **Binance** spot: "Weight" of each endpoint (binance-spot-api-docs ``rest-api.md``; the
  ``/sapi`` reads' IP weights from ccxt 4.5.90's cost table, ``binance.py`` lines 302-498,
  cost 0.1 per weight unit). The ``REQUEST_WEIGHT`` limit is 6,000 per minute per IP
  (``GET /api/v3/exchangeInfo`` ``rateLimits``), the default budget.
- **Kraken** spot: the REST "API call counter" (docs.kraken.com Spot REST rate limits): ledger
  and trade-history calls add 2, ``AddOrder`` and ``CancelOrder`` add nothing (the matching
  engine's per-pair limiter counts them), every other private call 1. Public calls are limited
  per IP, not by the key's counter: 1 each here, so a budget also bounds them.
- **Deribit**: credits (support.deribit.com "Rate Limits"): every non-matching-engine request
  costs 500 credits (pool 50,000, refilled at 10,000 a second); matching-engine requests
  (buy, sell, cancels) are limited per tier in requests per second, not from that pool: 0 here.
  A budget of 600000 a minute matches the default pool.

Bybit, OKX, Bitget, Bitstamp, Bitfinex and Coinbase publish request *rates* per endpoint, not
costs: every request there costs 1 and no budget applies unless the account sets one.
A request to an endpoint the table does not know costs the exchange's highest weight.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

#: The budget an account gets unless it sets ``weight_per_minute`` (None: no default budget).
DEFAULT_WEIGHT_PER_MINUTE: Mapping[str, int] = {"binance": 6000}

Params = Mapping[str, str]
Weight = int | Callable[[Params], int]


@dataclass(frozen=True)
class CostModel:
    """One exchange's documented cost per (method, path); ``unit`` names what is counted and
    ``highest`` (what an unlisted endpoint is charged) is its heaviest documented cost."""

    unit: str
    highest: int
    weights: Mapping[tuple[str, str], Weight]


# ---------------------------------------------------------------- Binance


def _symbols(params: Params) -> int | None:
    """How many symbols ``symbols`` names (a JSON array), or None: absent or unreadable."""
    raw = params.get("symbols")
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except ValueError:
        return None
    return len(names) if isinstance(names, list) and names else None


def _by_symbols(one: int, none: int, bands: tuple[tuple[int, int], ...]) -> Callable[[Params], int]:
    """``symbol``: ``one``; ``symbols``: the band for its count; neither: ``none``."""
    def weight(params: Params) -> int:
        if "symbol" in params:
            return one
        count = _symbols(params)
        if count is None:
            return none
        return next((w for bound, w in bands if count <= bound), none)
    return weight


def _per_symbol(params: Params) -> int:
    """``GET /api/v3/ticker`` and ``ticker/tradingDay``: 4 per symbol, capped at 200 (more
    than 50 symbols); a request that names none (refused there) is charged the cap."""
    if "symbol" in params:
        return 4
    count = _symbols(params)
    return 200 if count is None else min(4 * count, 200)


def _depth(params: Params) -> int:
    text = params.get("limit", "100")
    limit = int(text) if text.isdigit() else 5000
    return next((w for bound, w in ((100, 5), (500, 25), (1000, 50), (5000, 250)) if limit <= bound), 250)


def _if(name: str, present: int, absent: int) -> Callable[[Params], int]:
    return lambda params: present if name in params else absent


def _commission(params: Params) -> int:
    return 20 if params.get("computeCommissionRates", "").lower() == "true" else 1


BINANCE = CostModel("request weight", 250, {  # 250: depth with limit 1001-5000
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
    ("GET", "/api/v3/ticker/price"): _by_symbols(2, 4, ()),
    ("GET", "/api/v3/ticker/bookTicker"): _by_symbols(2, 4, ()),
    ("GET", "/api/v3/ticker"): _per_symbol,
    ("GET", "/api/v3/ticker/tradingDay"): _per_symbol,
    ("GET", "/api/v3/account"): 20,
    ("GET", "/api/v3/order"): 4,
    ("GET", "/api/v3/openOrders"): _if("symbol", 6, 80),
    ("GET", "/api/v3/allOrders"): 20,
    ("GET", "/api/v3/myTrades"): _if("orderId", 5, 20),
    ("GET", "/api/v3/orderList"): 4,
    ("GET", "/api/v3/allOrderList"): 20,
    ("GET", "/api/v3/openOrderList"): 6,
    ("GET", "/api/v3/rateLimit/order"): 40,
    ("GET", "/api/v3/myPreventedMatches"): _if("preventedMatchId", 2, 20),
    ("GET", "/api/v3/myAllocations"): 20,
    ("GET", "/api/v3/account/commission"): 20,
    ("GET", "/sapi/v1/account/apiRestrictions"): 1,
    ("GET", "/sapi/v1/capital/config/getall"): 10,
    ("GET", "/sapi/v1/asset/tradeFee"): 1,
    ("GET", "/sapi/v1/margin/allPairs"): 1,
    ("GET", "/sapi/v1/margin/isolated/allPairs"): 10,
    ("POST", "/api/v3/order"): 1,
    ("POST", "/api/v3/order/test"): _commission,
    ("POST", "/api/v3/order/cancelReplace"): 1,
    ("DELETE", "/api/v3/order"): 1,
    ("DELETE", "/api/v3/openOrders"): 1,
    ("DELETE", "/api/v3/orderList"): 1,
})

# ---------------------------------------------------------------- Kraken

_KRAKEN_PUBLIC = ("Time", "SystemStatus", "Assets", "AssetPairs", "Ticker", "OHLC", "Depth", "Trades",
                  "Spread")
_KRAKEN_HISTORY = ("Ledgers", "QueryLedgers", "TradesHistory", "QueryTrades")
_KRAKEN_ONE = ("Balance", "BalanceEx", "TradeBalance", "OpenOrders", "ClosedOrders", "QueryOrders",
               "OpenPositions", "TradeVolume", "OrderAmends", "AddOrderBatch", "CancelOrderBatch",
               "CancelAll", "CancelAllOrdersAfter")
KRAKEN = CostModel("API call counter", 2, {
    **{("GET", f"/0/public/{p}"): 1 for p in _KRAKEN_PUBLIC},
    **{("POST", f"/0/private/{p}"): 2 for p in _KRAKEN_HISTORY},
    **{("POST", f"/0/private/{p}"): 1 for p in _KRAKEN_ONE},
    ("POST", "/0/private/AddOrder"): 0,
    ("POST", "/0/private/CancelOrder"): 0,
})

# ---------------------------------------------------------------- Deribit

def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_DERIBIT_PUBLIC = _names("""get_time test status get_currencies get_instruments get_instrument ticker
    get_order_book get_order_book_by_instrument_id get_last_trades_by_instrument
    get_last_trades_by_currency get_index_price get_index_price_names get_book_summary_by_currency
    get_book_summary_by_instrument get_contract_size get_tradingview_chart_data
    get_funding_rate_history get_funding_rate_value get_historical_volatility
    get_volatility_index_data get_delivery_prices get_funding_chart_data get_mark_price_history
    get_supported_index_names""")
_DERIBIT_PRIVATE = _names("""get_account_summary get_account_summaries get_positions get_position
    get_order_state get_order_state_by_label get_open_orders get_open_orders_by_currency
    get_open_orders_by_instrument get_open_orders_by_label get_order_history_by_currency
    get_order_history_by_instrument get_user_trades_by_currency get_user_trades_by_instrument
    get_user_trades_by_order get_user_trades_by_currency_and_time
    get_user_trades_by_instrument_and_time get_margins get_order_margin_by_ids
    get_settlement_history_by_currency get_settlement_history_by_instrument get_transaction_log
    get_trigger_order_history""")
#: Deribit's matching-engine requests (its "Rate Limits" list): a separate, tiered limit
_DERIBIT_ENGINE = _names("""buy sell edit cancel cancel_all cancel_all_by_currency cancel_all_by_instrument
    cancel_all_by_kind_or_type cancel_by_label close_position""")
DERIBIT = CostModel("credits", 500, {
    **{("GET", f"/api/v2/public/{m}"): 500 for m in _DERIBIT_PUBLIC},
    **{("GET", f"/api/v2/private/{m}"): 500 for m in _DERIBIT_PRIVATE},
    **{("GET", f"/api/v2/private/{m}"): 0 for m in _DERIBIT_ENGINE},
})

#: The exchanges that publish a cost per request (every other request costs 1).
COST_MODELS: Mapping[str, CostModel] = {"binance": BINANCE, "kraken": KRAKEN, "deribit": DERIBIT}


def documented(exchange: str, method: str, path: str) -> bool:
    """Whether ``exchange`` has no cost model, or has a documented weight for this endpoint."""
    model = COST_MODELS.get(exchange)
    return model is None or (method, path) in model.weights


def request_weight(exchange: str, method: str, path: str, query: str = "", body: bytes = b"") -> int:
    """What one request costs against the account's budget (0 where the exchange counts it in
    another limit). Binance reads parameters from the query string and the form body alike,
    so both are consulted."""
    model = COST_MODELS.get(exchange)
    if model is None:
        return 1
    weight = model.weights.get((method, path))
    if weight is None:
        return model.highest
    if isinstance(weight, int):
        return weight
    if body and method != "GET":
        query = f"{query}&{body.decode('latin-1')}" if query else body.decode("latin-1")
    return weight(dict(parse_qsl(query, keep_blank_values=True)))
