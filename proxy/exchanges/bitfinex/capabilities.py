"""What generic code asks of Bitfinex: its declared capabilities
(:class:`proxy.exchanges.capabilities.Capabilities`), each stated or explicitly none.

Pure, like the rest of the exchange module: data and parsers of documented answers.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from proxy.errors import TickerError
from proxy.exchanges import tickers
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import ClientOrderIdRules, Lookup
from proxy.exchanges.order_ids import EVERY, OrderIds
from proxy.exchanges.tickers import Quote, Ticker
from proxy.model.request import Intent

#: A trading pair's symbol: ``tBTCUSD``, or ``tTESTBTC:TESTUSD`` for longer names.
SYMBOL = re.compile(r"t(?:[A-Z0-9]{6}|[A-Z0-9]{2,12}:[A-Z0-9]{2,12})")
#: ``cid`` is an integer below 2**45, unique per UTC day.
MAX_CID = 2**45
CLIENT_ORDER_ID_RULES = ClientOrderIdRules("cid", 0, max_int=MAX_CID)

# ---------------------------------------------------------------- reference price (ticker)
# GET /v2/ticker/t{SYM}: the singular trading-pair ticker, 10 numbers, LAST_PRICE at index 6
# ([BID, BID_SIZE, ASK, ASK_SIZE, DAILY_CHANGE, DAILY_CHANGE_RELATIVE, LAST_PRICE, ...]).


def _ticker_quote(data: Any, _symbol: str, _market: str) -> Quote:
    # Funding tickers (fUSD) and error answers (["error", code, msg]) have other shapes.
    if not isinstance(data, list) or len(data) != 10:
        raise TickerError("bitfinex ticker: not a trading-pair ticker")
    return Quote(tickers.price(data[6], "bitfinex LAST_PRICE"))


TICKER = Ticker(SYMBOL, lambda s, _: f"/v2/ticker/{tickers.q(s).replace('%3A', ':')}", _ticker_quote)

# ---------------------------------------------------------------- order lookups
# What an answer to the module's order_lookups says about the order (proxy.pipeline.lookup).

#: Closed orders asked for when looking one up (Bitfinex's documented maximum per request).
LOOKUP_LIMIT = 2500


def lookup_result(intent: Intent, status: int, body: bytes) -> tuple[Lookup, bytes]:
    try:  # the exchange's own JSON (JavaScript numbers, exponents included), only read here
        orders = json.loads(body)
    except ValueError:
        return Lookup.UNKNOWN, body
    if status != 200 or not isinstance(orders, list):
        return Lookup.UNKNOWN, body
    assert intent.client_order_id is not None and intent.quantity is not None
    amount = intent.quantity if intent.side == "buy" else -intent.quantity
    for row in orders:
        if not (isinstance(row, list) and len(row) > 7):
            return Lookup.UNKNOWN, body
        if row[2] == int(intent.client_order_id) and row[3] == intent.symbol \
                and _same_amount(row[7], amount):
            return Lookup.FOUND, json.dumps([row], separators=(",", ":")).encode()
    if len(orders) >= LOOKUP_LIMIT:
        return Lookup.UNKNOWN, body
    return Lookup.ABSENT, body


def _same_amount(value: Any, amount: Decimal) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        return Decimal(str(value)) == amount
    except InvalidOperation:
        return False


# ---------------------------------------------------------------- the declaration

CAPABILITIES = Capabilities(
    server_time=None,  # nonce-based: no timestamp window
    ticker=TICKER,
    key_permissions=None,  # auth/r/permissions is catalogued, but not read as a vetting probe
    weights=None,  # per-endpoint request rates, not weights
    nonce_rejections=(b"nonce: small",),  # error 10114
    ip_wide_limits=False,
    transit_signing=True,
    receive_window=False,
    testnet_switches=(),  # paper trading is a sub-account with its own keys on the same host
    secret_fields=("api_key", "api_secret"),
    client_order_ids=CLIENT_ORDER_ID_RULES,
    # w/order/submit answers [MTS, TYPE, MSG_ID, null, [ORDER, ...], CODE, STATUS, TEXT], ORDER[0]
    # the id; order/multi nests one such answer per operation at [4]
    order_ids=OrderIds((4, 0, 0), (4, EVERY, 4, 0, 0)),
)
