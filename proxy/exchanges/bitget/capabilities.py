"""What generic code asks of Bitget: its declared capabilities
(:class:`proxy.exchanges.capabilities.Capabilities`), each stated or explicitly none.

Pure, like the rest of the exchange module: data and parsers of documented answers.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.errors import BadRequest, TickerError
from proxy.exchanges import tickers
from proxy.exchanges.base import parse_json_object
from proxy.exchanges.bitget.stream import STREAM
from proxy.exchanges.capabilities import Capabilities, SignedRead
from proxy.exchanges.client_order_ids import ClientOrderIdRules, Lookup
from proxy.exchanges.order_ids import EVERY, OrderIds
from proxy.exchanges.refusals import ErrorFormat, RefusalBody, RefusalView, exchange_reason, render_native
from proxy.exchanges.server_time import ServerTime
from proxy.exchanges.tickers import Quote, Ticker

CLIENT_ORDER_ID_RULES = ClientOrderIdRules("clientOid", 49)

# ---------------------------------------------------------------- reference price (ticker)
# GET /api/v2/spot/market/tickers?symbol=S -> data[0].lastPr, stamped data[0].ts


def _ticker_quote(data: Any, symbol: str, _market: str) -> Quote:
    answer = tickers.obj(data, "bitget ticker")
    if answer.get("code") != "00000":
        raise TickerError("bitget ticker: code is not \"00000\"")
    item = tickers.only(answer.get("data"), "symbol", symbol, "bitget ticker")
    return Quote(tickers.price(item.get("lastPr"), "bitget lastPr"), tickers.epoch_ms(item.get("ts")))


TICKER = Ticker(re.compile(r"[A-Z0-9]{2,30}"),
                lambda s, _: f"/api/v2/spot/market/tickers?symbol={tickers.q(s)}", _ticker_quote)

# ---------------------------------------------------------------- order lookups
# What an answer to the module's order_lookups says about the order (proxy.pipeline.lookup).


def lookup_result(status: int, body: bytes) -> Lookup:
    try:
        data = parse_json_object(body)
    except BadRequest:
        return Lookup.UNKNOWN
    code, orders = data.get("code"), data.get("data")
    if status == 200 and code == "00000" and isinstance(orders, list):
        if not orders:
            return Lookup.ABSENT
        if isinstance(orders[0], dict) and isinstance(orders[0].get("orderId"), str):
            return Lookup.FOUND
    if status == 400 and code == "43001":
        return Lookup.ABSENT
    return Lookup.UNKNOWN


# ---------------------------------------------------------------- the declaration

# ---------------------------------------------------------------- errors
#: The proxy's own refusals (docs/interface.md "Refusals"): proxy code -> the Bitget error code that
#: ccxt 4.5.90's bitget maps to the class a bot should see; None: none maps to it, but ccxt maps
#: the HTTP status to it, so the answer is plain text and ccxt falls back to the status.
REFUSALS: dict[str, str | None] = {
    "unauthenticated": "40006", "forbidden": "40014", "endpoint_forbidden": "40014",
    "policy_denied": "40014", "bad_request": "40017", "too_large": "40017",
    "idempotency_conflict": "40500", "rate_limited": "1001", "account_paused": "40604",
    "not_ready": "40604", "upstream_error": "40604", "upstream_timeout": "50008",
}


def _render(refusal: RefusalView) -> RefusalBody:
    return render_native(refusal, REFUSALS, lambda code: {"code": code, "msg": refusal.text, "data": None})


def _reason(body: bytes) -> str | None:
    return exchange_reason(body, "code", "msg")


ERRORS = ErrorFormat((
    "/api/v2/spot/", "/api/v2/mix/", "/api/v2/margin/", "/api/v2/common/", "/api/v2/public/time",
    "/api/v2/user/", "/api/v2/broker/", "/api/v2/earn/", "/api/v2/tax/",
    "/api/v3/account/withdraw", "/api/v3/account/transfer", "/api/v3/broker/",
), REFUSALS, _render, _reason)


CAPABILITIES = Capabilities(
    # GET /api/v2/public/time -> data.serverTime (ms string)
    server_time=ServerTime("/api/v2/public/time", ("data", "serverTime")),
    ticker=TICKER,
    key_permissions=None,  # no endpoint that reads a key's own permissions
    key_check=SignedRead("GET", "/api/v2/spot/account/assets",
                         ok=lambda data: isinstance(data, dict) and data.get("code") == "00000"),
    key_refusal_codes=frozenset({"40006", "40009", "40037"}),
    weights=None,  # per-endpoint request rates per UID, not weights
    nonce_rejections=(),  # window-based: no nonce
    ip_wide_limits=False,
    transit_signing=True,
    receive_window=False,
    testnet_switches=("paper_trading",),  # demo trading: same host, paptrading: 1 (a demo API key)
    secret_fields=("api_key", "api_secret", "passphrase"),
    client_order_ids=CLIENT_ORDER_ID_RULES,
    # place-order answers {"data": {"orderId"}}; batch-orders {"data": {"successList":
    # [{"orderId"}]}}
    order_ids=OrderIds(("data", "orderId"), ("data", "successList", EVERY, "orderId")),
    private_stream=STREAM,
    errors=ERRORS,
)
