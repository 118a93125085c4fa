"""What generic code asks of Bybit: its declared capabilities
(:class:`proxy.exchanges.capabilities.Capabilities`), each stated or explicitly none.

Pure, like the rest of the exchange module: data and parsers of documented answers.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from proxy.errors import BadRequest, TickerError
from proxy.exchanges import tickers
from proxy.exchanges.base import parse_json_object
from proxy.exchanges.capabilities import Capabilities, PermissionProbe, Permissions
from proxy.exchanges.client_order_ids import ClientOrderIdRules, Lookup
from proxy.exchanges.order_ids import EVERY, OrderIds
from proxy.exchanges.server_time import ServerTime
from proxy.exchanges.tickers import Quote, Ticker
from proxy.model.request import Prepared

CLIENT_ORDER_ID_RULES = ClientOrderIdRules("orderLinkId", 36)

# ---------------------------------------------------------------- reference price (ticker)
# GET /v5/market/tickers?category=C&symbol=S -> result.list[0].lastPrice. BTCUSDT is both a
# spot pair and a linear perpetual, so the price comes from the request's ``category``.

_CATEGORIES = frozenset({"spot", "linear", "inverse", "option"})


def _ticker_market(prepared: Prepared) -> str:
    """The request's ``category`` (from its JSON body or query string); "?" if none is valid."""
    text = prepared.body.decode("utf-8", "replace") if prepared.body else ""
    try:
        params = json.loads(text) if text else dict(parse_qsl(prepared.query))
    except ValueError:
        return "?"
    category = params.get("category") if isinstance(params, dict) else None
    return category if isinstance(category, str) and category in _CATEGORIES else "?"


def _ticker_quote(data: Any, symbol: str, market: str) -> Quote:
    answer = tickers.obj(data, "bybit ticker")
    if answer.get("retCode") != 0:
        raise TickerError("bybit ticker: retCode is not 0")
    result = tickers.obj(answer.get("result"), "bybit result")
    if result.get("category") != market:
        raise TickerError("bybit ticker: the answer is for another category")
    item = tickers.only(result.get("list"), "symbol", symbol, "bybit ticker")
    at = tickers.epoch_ms(answer["time"]) if "time" in answer else None
    return Quote(tickers.price(item.get("lastPrice"), "bybit lastPrice"), at)


TICKER = Ticker(re.compile(r"[A-Z0-9\-]{1,40}"),
                lambda s, m: f"/v5/market/tickers?category={m}&symbol={tickers.q(s)}", _ticker_quote,
                markets=_CATEGORIES, market=_ticker_market)

# ---------------------------------------------------------------- key permissions
# GET /v5/user/query-api: permissions.Wallet contains "Withdraw"; ips ["*"] is unrestricted


def _permissions(data: Any) -> Permissions:
    if data.get("retCode") != 0:
        raise ValueError(f"retCode {data.get('retCode')}")
    result = data["result"]
    wallet = result["permissions"].get("Wallet") or []
    ips = result.get("ips")
    return Permissions("Withdraw" in wallet, None if ips is None else ips != ["*"])


# ---------------------------------------------------------------- order lookups
# What an answer to the module's order_lookups says about the order (proxy.pipeline.lookup).


def lookup_result(status: int, body: bytes) -> Lookup:
    try:
        data = parse_json_object(body, "lookup")
    except BadRequest:
        return Lookup.UNKNOWN
    result = data.get("result")
    if status != 200 or data.get("retCode") != 0 or not isinstance(result, dict):
        return Lookup.UNKNOWN
    orders = result.get("list")
    if not isinstance(orders, list):
        return Lookup.UNKNOWN
    return Lookup.FOUND if orders else Lookup.ABSENT


# ---------------------------------------------------------------- the declaration

CAPABILITIES = Capabilities(
    # GET /v5/market/time; result.timeNano is the finest field
    server_time=ServerTime("/v5/market/time", ("result", "timeNano"), "ns"),
    ticker=TICKER,
    key_permissions=PermissionProbe("/v5/user/query-api", _permissions),
    weights=None,  # per-endpoint request rates per UID, not weights
    nonce_rejections=(),  # window-based: no nonce
    ip_wide_limits=False,
    transit_signing=True,
    receive_window=True,  # X-BAPI-RECV-WINDOW, signed
    testnet_switches=(),  # the testnet is its own host
    secret_fields=("api_key", "api_secret"),
    client_order_ids=CLIENT_ORDER_ID_RULES,
    # v5 order/create answers {"result": {"orderId"}}; create-batch {"result": {"list":
    # [{"orderId"}]}}
    order_ids=OrderIds(("result", "orderId"), ("result", "list", EVERY, "orderId")),
)
