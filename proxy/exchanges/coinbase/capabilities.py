"""What generic code asks of Coinbase: its declared capabilities
(:class:`proxy.exchanges.capabilities.Capabilities`), each stated or explicitly none.

Pure, like the rest of the exchange module: data and parsers of documented answers.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.errors import TickerError
from proxy.exchanges import tickers
from proxy.exchanges.capabilities import Capabilities, PermissionProbe, Permissions, SignedRead
from proxy.exchanges.client_order_ids import ClientOrderIdRules
from proxy.exchanges.coinbase.stream import STREAM
from proxy.exchanges.order_ids import OrderIds
from proxy.exchanges.refusals import (
    ErrorFormat,
    RefusalBody,
    RefusalView,
    json_or_none,
    reason_text,
    render_native,
)
from proxy.exchanges.server_time import ServerTime
from proxy.exchanges.tickers import Quote, Ticker

CLIENT_ORDER_ID_RULES = ClientOrderIdRules("client_order_id", 128)

# ---------------------------------------------------------------- reference price (ticker)
# GET /api/v3/brokerage/market/products/{id} -> price


def _ticker_quote(data: Any, symbol: str, _market: str) -> Quote:
    answer = tickers.obj(data, "coinbase product")
    if answer.get("product_id") != symbol:
        raise TickerError("coinbase product: the answer is for another product")
    return Quote(tickers.price(answer.get("price"), "coinbase price"))


TICKER = Ticker(re.compile(r"[A-Z0-9]{1,20}(?:-[A-Z0-9]{1,20}){1,3}"),
                lambda s, _: f"/api/v3/brokerage/market/products/{tickers.q(s)}", _ticker_quote)

# ---------------------------------------------------------------- key permissions
# GET /api/v3/brokerage/key_permissions: can_transfer


def _permissions(data: Any) -> Permissions:
    transfer = data["can_transfer"]
    if not isinstance(transfer, bool):
        raise TypeError("can_transfer")
    return Permissions(transfer)



PROBE = PermissionProbe("/api/v3/brokerage/key_permissions", _permissions)

# ---------------------------------------------------------------- the declaration

# ---------------------------------------------------------------- errors
#: The proxy's own refusals (docs/interface.md "Refusals"): proxy code -> the Coinbase error id that
#: ccxt 4.5.90's coinbase maps to the class a bot should see; None: none maps to it, but ccxt maps
#: the HTTP status to it, so the answer is plain text and ccxt falls back to the status.
REFUSALS: dict[str, str | None] = {
    "unauthenticated": "unauthorized", "forbidden": "PERMISSION_DENIED",
    "endpoint_forbidden": "PERMISSION_DENIED", "policy_denied": "PERMISSION_DENIED",
    "bad_request": "INVALID_ARGUMENT", "too_large": "INVALID_ARGUMENT",
    "idempotency_conflict": "INVALID_ARGUMENT", "rate_limited": "rate_limit_exceeded",
    "account_paused": None, "not_ready": None, "upstream_error": None, "upstream_timeout": None,
}


def _render(refusal: RefusalView) -> RefusalBody:
    """Advanced Trade's ``{"error", "message"}``. Nothing of Coinbase's maps to InvalidOrder:
    a reused client order id is BadRequest."""
    return render_native(refusal, REFUSALS, lambda error: {
        "error": error, "message": refusal.text, "error_details": refusal.text})


def _reason(body: bytes) -> str | None:
    """``error message``, ``errors[0].id message`` or ``error_response.error message``."""
    data = json_or_none(body)
    if not isinstance(data, dict):
        return None
    for inner in (data.get("error_response"), *(data.get("errors") or [])[:1]):
        if isinstance(inner, dict):
            return reason_text(inner.get("error", inner.get("id")), inner.get("message"))
    return reason_text(data.get("error"), data.get("message", data.get("error_description")))


ERRORS = ErrorFormat(("/api/v3/brokerage/", "/v2/"), REFUSALS, _render, _reason)


CAPABILITIES = Capabilities(
    # GET /api/v3/brokerage/time -> epochMillis (string)
    server_time=ServerTime("/api/v3/brokerage/time", ("epochMillis",)),
    ticker=TICKER,
    key_permissions=PROBE,
    key_check=SignedRead("GET", PROBE.path, ok=PROBE.readable),
    key_refusal_codes=frozenset(),  # a refused CDP JWT is an HTTP 401
    weights=None,  # per-endpoint request rates, not weights
    nonce_rejections=(),  # window-based (the JWT's nbf/exp): no nonce
    ip_wide_limits=False,
    # its JWT library needs the private key object in process, not a signing interface
    transit_signing=False,
    receive_window=False,
    testnet_switches=(),  # the sandbox is its own host
    secret_fields=("api_key", "api_secret"),
    client_order_ids=None,    # POST orders answers {"success": true, "success_response": {"order_id"}}
    order_ids=OrderIds(("success_response", "order_id")),
    private_stream=STREAM,
    errors=ERRORS,
)
