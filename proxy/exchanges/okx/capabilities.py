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
from proxy.exchanges.capabilities import Capabilities, PermissionProbe, Permissions
from proxy.exchanges.client_order_ids import ClientOrderIdRules, Lookup
from proxy.exchanges.order_ids import EVERY, OrderIds
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


# ---------------------------------------------------------------- the declaration

CAPABILITIES = Capabilities(
    # GET /api/v5/public/time -> data[0].ts (ms string)
    server_time=ServerTime("/api/v5/public/time", ("data", 0, "ts")),
    ticker=TICKER,
    key_permissions=PermissionProbe("/api/v5/account/config", _permissions),
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
)
