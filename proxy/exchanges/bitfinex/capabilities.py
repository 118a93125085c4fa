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
from proxy.exchanges.bitfinex.stream import STREAM
from proxy.exchanges.capabilities import Capabilities, SignedRead
from proxy.exchanges.client_order_ids import ClientOrderIdRules, Lookup
from proxy.exchanges.order_ids import EVERY, OrderIds
from proxy.exchanges.refusals import (
    ErrorFormat,
    RefusalBody,
    RefusalView,
    exchange_reason,
    json_or_none,
    reason_text,
    render_native,
)
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

# ---------------------------------------------------------------- errors
#: The proxy's own refusals (docs/interface.md "Refusals"): proxy code -> the Bitfinex error that
#: ccxt 4.5.90's bitfinex maps to the class a bot should see; None: none maps to it, but ccxt maps
#: the HTTP status to it, so the answer is plain text and ccxt falls back to the status.
REFUSALS: dict[str, str | None] = {
    "unauthenticated": "10100", "forbidden": "10001", "endpoint_forbidden": "10001",
    "policy_denied": "10001", "bad_request": "10020", "too_large": "10020",
    "idempotency_conflict": "10020", "rate_limited": "11010", "account_paused": "temporarily_unavailable",
    "not_ready": "temporarily_unavailable", "upstream_error": "temporarily_unavailable",
    "upstream_timeout": None,
}


def _render(refusal: RefusalView) -> RefusalBody:
    """``{"error": "10001", ...}``: ccxt reads Bitfinex's ``["error", code, text]`` only from
    500 and 429 answers, an object's ``error`` at any status. Nothing of Bitfinex's maps to
    InvalidOrder: a reused client order id is BadRequest (10020)."""
    return render_native(refusal, REFUSALS, lambda code: {"error": code, "error_description": refusal.text})


def _reason(body: bytes) -> str | None:
    data = json_or_none(body)  # ["error", 10114, "nonce: small"]
    if isinstance(data, list) and len(data) >= 3 and data[0] == "error":
        return reason_text(data[1], data[2])
    return exchange_reason(body, "error", "message")


ERRORS = ErrorFormat((
    "/v2/auth/", "/v2/ticker", "/v2/book/", "/v2/conf/", "/v2/platform/", "/v2/trades/",
    "/v2/candles/", "/v2/status/", "/v2/calc/", "/v2/stats1/", "/v1/",
), REFUSALS, _render, _reason)


CAPABILITIES = Capabilities(
    server_time=None,  # nonce-based: no timestamp window
    ticker=TICKER,
    key_permissions=None,  # auth/r/permissions is catalogued, but not read as a vetting probe
    key_check=SignedRead("POST", "/v2/auth/r/wallets", body=b"{}"),
    key_refusal_codes=frozenset({"10100"}),
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
    private_stream=STREAM,
    errors=ERRORS,
)
