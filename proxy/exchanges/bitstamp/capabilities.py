"""What generic code asks of Bitstamp: its declared capabilities
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
from proxy.exchanges.tickers import Quote, Ticker

CLIENT_ORDER_ID_RULES = ClientOrderIdRules("client_order_id", 64)

# ---------------------------------------------------------------- reference price (ticker)
# GET /api/v2/ticker/{pair}/ -> last, stamped timestamp (seconds)


def _ticker_quote(data: Any, symbol: str, _market: str) -> Quote:
    answer = tickers.obj(data, "bitstamp ticker")
    pair = answer.get("pair")
    if pair is not None and str(pair).replace("/", "").lower() != symbol:
        raise TickerError("bitstamp ticker: the answer is for another pair")
    at = tickers.epoch_ms(answer["timestamp"], 1000) if "timestamp" in answer else None
    return Quote(tickers.price(answer.get("last"), "bitstamp last"), at)


TICKER = Ticker(re.compile(r"[a-z0-9]{4,20}(?:-perp)?"),
                lambda s, _: f"/api/v2/ticker/{tickers.q(s)}/", _ticker_quote)

# ---------------------------------------------------------------- order lookups
# What an answer to the module's order_lookups says about the order (proxy.pipeline.lookup).


def lookup_result(status: int, body: bytes) -> Lookup:
    try:
        data = parse_json_object(body)
    except BadRequest:
        return Lookup.UNKNOWN
    if status == 200 and data.get("id") is not None and isinstance(data.get("status"), str) \
            and data.get("status") != "error":
        return Lookup.FOUND
    reason = data.get("reason")
    reasons = reason.get("__all__") if isinstance(reason, dict) else [reason]
    if data.get("response_code") == "404.002" or (
            isinstance(reasons, list) and "Order not found." in reasons):
        return Lookup.ABSENT
    return Lookup.UNKNOWN


# ---------------------------------------------------------------- the declaration

CAPABILITIES = Capabilities(
    server_time=None,  # no server-time endpoint was verified: signed with the host clock
    ticker=TICKER,
    key_permissions=None,  # no endpoint that reads a key's own permissions
    weights=None,
    # X-Auth-Nonce is single-use within the timestamp window
    nonce_rejections=(b"Invalid nonce",),
    ip_wide_limits=False,
    transit_signing=True,
    receive_window=False,
    testnet_switches=(),  # no testnet
    secret_fields=("api_key", "api_secret"),
    client_order_ids=CLIENT_ORDER_ID_RULES,
    # buy/sell answer the order itself: {"id": "1234", ...}
    order_ids=OrderIds(("id",)),
)
