"""What generic code asks of Coinbase: its declared capabilities
(:class:`proxy.exchanges.capabilities.Capabilities`), each stated or explicitly none.

Pure, like the rest of the exchange module: data and parsers of documented answers.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.errors import TickerError
from proxy.exchanges import tickers
from proxy.exchanges.capabilities import Capabilities, PermissionProbe, Permissions
from proxy.exchanges.client_order_ids import ClientOrderIdRules
from proxy.exchanges.order_ids import OrderIds
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


# ---------------------------------------------------------------- the declaration

CAPABILITIES = Capabilities(
    # GET /api/v3/brokerage/time -> epochMillis (string)
    server_time=ServerTime("/api/v3/brokerage/time", ("epochMillis",)),
    ticker=TICKER,
    key_permissions=PermissionProbe("/api/v3/brokerage/key_permissions", _permissions),
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
)
