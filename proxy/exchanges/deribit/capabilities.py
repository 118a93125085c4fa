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
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import ClientOrderIdRules, Lookup
from proxy.exchanges.order_ids import OrderIds
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


# ---------------------------------------------------------------- the declaration

CAPABILITIES = Capabilities(
    # GET /api/v2/public/get_time -> result (ms integer)
    server_time=ServerTime("/api/v2/public/get_time", ("result",)),
    ticker=TICKER,
    key_permissions=None,  # no endpoint that reads a key's own permissions
    weights=None,  # credit-based limits per account, not per-request weights
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
)
