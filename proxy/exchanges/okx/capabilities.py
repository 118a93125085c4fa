"""What generic code asks of OKX: its declared capabilities
(:class:`proxy.exchanges.capabilities.Capabilities`), each stated or explicitly none.

Pure, like the rest of the exchange module: data and parsers of documented answers.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.errors import BadRequest, TickerError
from proxy.exchanges import tickers
from proxy.exchanges.base import parse_json_object
from proxy.exchanges.capabilities import Capabilities, PermissionProbe, Permissions, SignedRead
from proxy.exchanges.client_order_ids import ClientOrderIdRules, Lookup
from proxy.exchanges.okx.stream import STREAM
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
from proxy.exchanges.server_time import ServerTime
from proxy.exchanges.tickers import Quote, Ticker

CLIENT_ORDER_ID_RULES = ClientOrderIdRules("clOrdId", 32, separator="")

# ---------------------------------------------------------------- reference price (ticker)
# GET /api/v5/market/ticker?instId=S -> data[0].last, stamped data[0].ts


def _ticker_quote(data: Any, symbol: str, _market: str) -> Quote:
    answer = tickers.obj(data, "okx ticker")
    if answer.get("code") != "0":
        raise TickerError("okx ticker: code is not \"0\"")
    item = tickers.only(answer.get("data"), "instId", symbol, "okx ticker")
    return Quote(tickers.price(item.get("last"), "okx last"), tickers.epoch_ms(item.get("ts")))


TICKER = Ticker(re.compile(r"[A-Z0-9]{1,20}(?:-[A-Z0-9]{1,20}){1,4}"),
                lambda s, _: f"/api/v5/market/ticker?instId={tickers.q(s)}", _ticker_quote)

# ---------------------------------------------------------------- key permissions
# GET /api/v5/account/config: data[0].perm lists "withdraw"


def _permissions(data: Any) -> Permissions:
    if data.get("code") != "0":
        raise ValueError(f"code {data.get('code')}")
    perm = data["data"][0]["perm"]
    return Permissions("withdraw" in str(perm).split(","))


# ---------------------------------------------------------------- order lookups
# What an answer to the module's order_lookups says about the order (proxy.pipeline.lookup).


def lookup_result(status: int, body: bytes) -> Lookup:
    try:
        data = parse_json_object(body, "lookup")
    except BadRequest:
        return Lookup.UNKNOWN
    if status == 200 and data.get("code") == "0" and isinstance(data.get("data"), list) and data["data"]:
        return Lookup.FOUND
    if data.get("code") == "51603":
        return Lookup.ABSENT
    return Lookup.UNKNOWN



PROBE = PermissionProbe("/api/v5/account/config", _permissions)

# ---------------------------------------------------------------- the declaration

# ---------------------------------------------------------------- errors
#: The proxy's own refusals (docs/interface.md "Refusals"): proxy code -> the OKX error code that
#: ccxt 4.5.90's okx maps to the class a bot should see; None: none maps to it, but ccxt maps
#: the HTTP status to it, so the answer is plain text and ccxt falls back to the status.
REFUSALS: dict[str, str | None] = {
    "unauthenticated": "50111", "forbidden": "50027", "endpoint_forbidden": "50027",
    "policy_denied": "50027", "bad_request": "51000", "too_large": "51000",
    "idempotency_conflict": "51016", "rate_limited": "50011", "account_paused": "50013",
    "not_ready": "50013", "upstream_error": "50013", "upstream_timeout": "50004",
}


def _render(refusal: RefusalView) -> RefusalBody:
    return render_native(refusal, REFUSALS, lambda code: {"code": code, "msg": refusal.text, "data": []})


def _reason(body: bytes) -> str | None:
    """``code msg``, or the first order's ``sCode sMsg`` when the top level says only "1"."""
    data = json_or_none(body)
    items = data.get("data") if isinstance(data, dict) else None
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    if first.get("sCode") not in (None, "", "0"):
        return reason_text(first.get("sCode"), first.get("sMsg"))
    return exchange_reason(body, "code", "msg")


ERRORS = ErrorFormat(("/api/v5/",), REFUSALS, _render, _reason)


CAPABILITIES = Capabilities(
    # GET /api/v5/public/time -> data[0].ts (ms string)
    server_time=ServerTime("/api/v5/public/time", ("data", 0, "ts")),
    ticker=TICKER,
    key_permissions=PROBE,
    key_check=SignedRead("GET", PROBE.path, ok=PROBE.readable),
    key_refusal_codes=frozenset({"50111", "50113"}),
    weights=None,  # per-endpoint request rates per UID, not weights
    nonce_rejections=(),  # window-based: no nonce
    ip_wide_limits=False,
    transit_signing=True,
    receive_window=False,
    testnet_switches=("simulated_trading",),  # demo trading: same host, x-simulated-trading: 1
    secret_fields=("api_key", "api_secret", "passphrase"),
    client_order_ids=CLIENT_ORDER_ID_RULES,
    # trade/order and batch-orders answer {"data": [{"ordId"}, ...]}
    order_ids=OrderIds(("data", 0, "ordId"), ("data", EVERY, "ordId")),
    private_stream=STREAM,
    errors=ERRORS,
)
