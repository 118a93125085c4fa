"""OKX v5 (``/api/v5``: spot, margin, swap, futures, options).

Signing (docs/exchanges.md §3): base64 HMAC-SHA256 of ``timestamp + METHOD + requestPath + body``, where
``timestamp`` is ISO-8601 UTC with milliseconds and ``Z`` (``2020-12-08T09:08:57.715Z``),
``requestPath`` includes ``?query`` for GET, and ``body`` is the JSON exactly as sent (empty
when there is none). The passphrase travels in plain text in ``OK-ACCESS-PASSPHRASE``. Demo
trading uses the same host with ``x-simulated-trading: 1``: a testnet account's exchange object
has ``simulated_trading`` set (``capabilities.testnet_switches``), like :data:`TESTNET`.

Quantity semantics: ``sz`` is the exchange's own quantity (base for spot, contracts for
derivatives) except a spot Market order, where ``tgtCcy`` (default ``quote_ccy`` for a buy,
``base_ccy`` for a sell) may make it a quote amount.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from proxy.errors import BadRequest, InstrumentError
from proxy.exchanges.base import (
    Catalogue,
    Credentials,
    Environment,
    NonceUnit,
    dump_json,
    encode_pairs,
    endpoint,
    instrument_answer,
    parse_json,
    parse_pairs,
    positive_decimal,
    require_content_type,
)
from proxy.exchanges.base import (
    json_text as _text,
)
from proxy.exchanges.base import (
    require_secret as _require,
)
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import (
    Lookup,
    batch_inbound_with,
    inbound_with,
    lookup_inbound,
    member_appended,
)
from proxy.exchanges.okx.capabilities import CAPABILITIES, CLIENT_ORDER_ID_RULES, lookup_result
from proxy.model.decimals import parse_decimal
from proxy.model.request import Action, Category, Inbound, Instrument, Intent, Outbound, Prepared, Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey

P, R, T, C = Category.PUBLIC, Category.READ, Category.TRADE, Category.CANCEL
W, X, A = Category.WITHDRAW, Category.TRANSFER, Category.ADMIN
V5 = "/api/v5"

CATALOGUE = Catalogue([
    # public market data
    *(endpoint("GET", f"{V5}/{p}", P) for p in (
        "public/time", "public/instruments", "public/funding-rate", "public/funding-rate-history",
        "public/mark-price", "public/price-limit", "public/open-interest", "public/underlying",
        "public/opt-summary", "public/estimated-price", "public/position-tiers",
        "market/tickers", "market/ticker", "market/index-tickers", "market/books",
        "market/candles", "market/history-candles", "market/trades", "market/history-trades",
    )),
    # reads (asset/currencies is what ccxt's load_markets calls for currencies)
    *(endpoint("GET", f"{V5}/{p}", R) for p in (
        "account/balance", "account/config", "account/positions", "account/bills",
        "account/trade-fee", "account/max-size", "account/max-avail-size",
        "account/leverage-info", "asset/balances", "asset/currencies", "trade/order",
        "trade/orders-pending", "trade/orders-history", "trade/orders-history-archive",
        "trade/fills", "trade/fills-history",
    )),
    # trading
    endpoint("POST", f"{V5}/trade/order", T, name="order"),
    endpoint("POST", f"{V5}/trade/batch-orders", T, name="order", batch=True),
    endpoint("POST", f"{V5}/trade/amend-order", T, Action.AMEND, name="order"),
    endpoint("POST", f"{V5}/trade/amend-batch-orders", T, Action.AMEND, name="order", batch=True),
    endpoint("POST", f"{V5}/trade/cancel-order", C),
    endpoint("POST", f"{V5}/trade/cancel-batch-orders", C, batch=True),
    # never: catalogued so that the refusal names the category (unlisted paths are refused too)
    endpoint("POST", f"{V5}/asset/withdrawal", W),
    endpoint("POST", f"{V5}/asset/withdrawal-lightning", W),
    endpoint("POST", f"{V5}/asset/cancel-withdrawal", W),
    endpoint("POST", f"{V5}/asset/transfer", X),
    endpoint("POST", f"{V5}/asset/subaccount/transfer", X),
    endpoint("POST", f"{V5}/users/subaccount/set-transfer-out", X),
    *(endpoint("POST", f"{V5}/{p}", A) for p in (
        "users/subaccount/apikey", "users/subaccount/modify-apikey",
        "users/subaccount/delete-apikey", "users/subaccount/create-subaccount",
        "broker/nd/subaccount/apikey", "broker/nd/subaccount/modify-apikey",
        "broker/nd/subaccount/delete-apikey",
    )),
])

SIMULATED_TRADING_HEADER = ("x-simulated-trading", "1")

_INST_ID = re.compile(r"[A-Z0-9]{1,20}(?:-[A-Z0-9]{1,20}){1,4}")
_CL_ORD_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_TAG = re.compile(r"[A-Za-z0-9]{1,16}")
_SIDES = frozenset({"buy", "sell"})
_TD_MODES = frozenset({"cash", "cross", "isolated", "spot_isolated"})
_PRICED = frozenset({"limit", "post_only", "fok", "ioc", "mmp", "mmp_and_post_only", "op_fok"})
_UNPRICED = frozenset({"market", "optimal_limit_ioc"})
_ORDER_FIELDS = frozenset({
    "instId", "tdMode", "ccy", "clOrdId", "tag", "side", "posSide", "ordType", "sz", "px",
    "reduceOnly", "tgtCcy", "banAmend", "pxAmendType", "tradeQuoteCcy", "quickMgnType",
    "stpId", "stpMode",
})
_AMEND_FIELDS = frozenset({"instId", "cxlOnFail", "ordId", "clOrdId", "reqId", "newSz", "newPx"})
_CANCEL_FIELDS = frozenset({"instId", "ordId", "clOrdId"})
MAX_BATCH = 20


@dataclass(frozen=True)
class Okx:
    """The OKX v5 exchange; ``simulated_trading`` marks demo-trading (testnet) accounts."""

    name: str = "okx"
    nonce_unit: NonceUnit | None = None
    simulated_trading: bool = False

    @property
    def capabilities(self) -> Capabilities:
        """What generic code may ask of Okx: the "capabilities" section below."""
        return CAPABILITIES

    def base_url(self, environment: Environment) -> str:
        # OKX demo trading shares the live host; the x-simulated-trading header selects it.
        return "https://www.okx.com"

    def load_credentials(self, fields: Mapping[str, Secret], version: int) -> Credentials:
        api_key, secret = _require(fields, "api_key"), _require(fields, "api_secret")
        passphrase = _require(fields, "passphrase")
        if "PRIVATE KEY-----" in secret.reveal():
            raise ValueError("api_secret: OKX issues HMAC secrets only, not PEM keys")
        return Credentials(api_key=api_key.reveal(), key=HmacKey(secret),
                           passphrase=passphrase, version=version)

    def prepare(self, inbound: Inbound) -> Prepared:
        ep = CATALOGUE.lookup(inbound.method, inbound.raw_path)
        if inbound.method == "GET":
            if inbound.body:
                raise BadRequest("body: send GET parameters in the query string")
            query = parse_pairs(inbound.raw_query, "query")
            intents: tuple[Intent, ...] = ()
            if ep.category is Category.READ:
                params = dict(query)
                intents = (Intent(symbol=_inst_id(params, False),
                                  client_order_id=_cl_ord_id(params)),)
            return Prepared(method="GET", path=ep.path, query=encode_pairs(query), body=b"",
                            content_type=None, endpoint=ep, intents=intents)
        if inbound.raw_query:
            raise BadRequest("query: OKX signs the JSON body of a POST; put every parameter "
                             "in the body")
        require_content_type(inbound, "application/json")
        value: Any = parse_json(inbound.body) if inbound.body else None
        intents = _post_intents(ep.action, ep.batch, value)
        body = b"" if value is None else dump_json(value).encode()
        return Prepared(method="POST", path=ep.path, query="", body=body,
                        content_type="application/json", endpoint=ep, intents=intents)

    def with_client_order_id(self, prepared: Prepared, coid: str) -> Prepared:
        """``prepared`` (an order without an id) with the client order id added: appended to
        the canonical JSON without parsing the order again (``prepare`` keeps the members in
        order and reads the id from nowhere else), else by a re-parse."""
        field = CLIENT_ORDER_ID_RULES.field
        fast = member_appended(prepared, field, coid) if _CL_ORD_ID.fullmatch(coid) else None
        return fast or self.prepare(inbound_with(prepared, field, coid))

    def order_lookups(self, prepared: Prepared) -> tuple[Prepared, ...]:
        """``GET /api/v5/trade/order?instId=..&clOrdId=..``."""
        intent = prepared.intents[0]
        assert intent.symbol is not None and intent.client_order_id is not None
        params = [("instId", intent.symbol), ("clOrdId", intent.client_order_id)]
        return (self.prepare(lookup_inbound("GET", f"{V5}/trade/order", params)),)

    def lookup_result(self, status: int, body: bytes) -> Lookup:
        """code "0" with the order: found; 51603 "Order does not exist": absent."""
        return lookup_result(status, body)

    def with_batch_client_order_ids(self, prepared: Prepared, ids: Sequence[str | None]) -> Prepared:
        """``prepared`` (a batch placement) with ``ids[i]`` added to order ``i`` that has none."""
        values = [c for c in ids]
        return self.prepare(batch_inbound_with(prepared, None, CLIENT_ORDER_ID_RULES.field, values))

    def instrument_request(self, symbol: str, market: str) -> Outbound:
        """``GET /api/v5/public/instruments?instType=SWAP&instId=..`` (OKX-DOC "Get
        instruments"); options need an instrument family and are not read (refused)."""
        if market not in ("SWAP", "FUTURES") or not _INST_ID.fullmatch(symbol):
            raise InstrumentError(f"no OKX instrument table for {market or 'this'} instrument")
        extra = (SIMULATED_TRADING_HEADER,) if self.simulated_trading else ()
        return Outbound("GET", f"{V5}/public/instruments?"
                        + encode_pairs([("instType", market), ("instId", symbol)]), extra, b"")

    def parse_instrument(self, symbol: str, market: str, body: bytes) -> Instrument:
        return parse_instrument(symbol, market, body)

    def sign(self, prepared: Prepared, creds: Credentials, stamp: Stamp, host: str) -> Outbound:
        target = f"{prepared.path}?{prepared.query}" if prepared.query else prepared.path
        extra = (SIMULATED_TRADING_HEADER,) if self.simulated_trading else ()
        if prepared.category is Category.PUBLIC:
            return Outbound(prepared.method, target, extra, prepared.body, stamp)
        if creds.passphrase is None:
            raise TypeError("OKX credentials need a passphrase")
        timestamp = iso8601_ms(stamp.now_ms)
        message = (timestamp + prepared.method + target).encode() + prepared.body
        if not isinstance(creds.key, HmacKey):
            raise TypeError("OKX signs with HMAC keys")
        headers = (
            *((("Content-Type", "application/json"),) if prepared.method != "GET" else ()),
            ("OK-ACCESS-KEY", creds.api_key),
            ("OK-ACCESS-PASSPHRASE", creds.passphrase.reveal()),
            ("OK-ACCESS-TIMESTAMP", timestamp),
            ("OK-ACCESS-SIGN", creds.key.b64digest(message)),
            *extra,
        )
        return Outbound(prepared.method, target, headers, prepared.body, stamp)


def iso8601_ms(now_ms: int) -> str:
    """``2020-12-08T09:08:57.715Z``: OKX's OK-ACCESS-TIMESTAMP format."""
    seconds = datetime.fromtimestamp(now_ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{seconds}.{now_ms % 1000:03d}Z"


# ---------------------------------------------------------------- intents


def _inst_id(obj: Mapping[str, Any], required: bool) -> str | None:
    inst = _text(obj, "instId")
    if inst is None:
        if required:
            raise BadRequest("instId: required, e.g. BTC-USDT")
        return None
    if not _INST_ID.fullmatch(inst):
        raise BadRequest("instId: use OKX's upper-case instrument id, e.g. BTC-USDT")
    return inst


def _cl_ord_id(obj: Mapping[str, Any]) -> str | None:
    coid = _text(obj, "clOrdId")
    if coid is not None and not _CL_ORD_ID.fullmatch(coid):
        raise BadRequest("clOrdId: 1-32 letters and digits (OKX allows no other characters)")
    return coid


def _decimal(obj: Mapping[str, Any], key: str) -> Decimal | None:
    text = obj.get(key)
    if text is None:
        return None
    if not isinstance(text, str):
        raise BadRequest(f"{key}: send decimals as JSON strings, e.g. \"0.01\"")
    return parse_decimal(text, key)


def _check_fields(obj: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise BadRequest(f"{unknown[0]!r} is not a {what} parameter this proxy understands")
    for key, value in obj.items():
        if isinstance(value, dict | list):
            raise BadRequest(f"{key}: nested values are not allowed here")


def _post_intents(action: Action, batch: bool, value: Any) -> tuple[Intent, ...]:
    if action not in (Action.PLACE, Action.AMEND, Action.CANCEL):
        if value is not None and not isinstance(value, dict):
            raise BadRequest("body: must be a JSON object")
        return ()
    if batch:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
            raise BadRequest(f"body: a batch is a JSON list of 1-{MAX_BATCH} objects")
        items = value
    else:
        if not isinstance(value, dict):
            raise BadRequest("body: must be a JSON object (use the batch endpoint for lists)")
        items = [value]
    if not all(isinstance(item, dict) for item in items):
        raise BadRequest("body: every entry must be a JSON object")
    return tuple(_one(action, item) for item in items)


def _one(action: Action, obj: Mapping[str, Any]) -> Intent:
    if action is Action.CANCEL:
        _check_fields(obj, _CANCEL_FIELDS, "cancel")
        if "ordId" not in obj and "clOrdId" not in obj:
            raise BadRequest("cancel: send ordId or clOrdId")
        return Intent(symbol=_inst_id(obj, True), client_order_id=_cl_ord_id(obj))
    if action is Action.AMEND:
        _check_fields(obj, _AMEND_FIELDS, "amend")
        if "ordId" not in obj and "clOrdId" not in obj:
            raise BadRequest("amend: send ordId or clOrdId")
        inst = _inst_id(obj, True)
        assert inst is not None
        return Intent(symbol=inst, quantity=_decimal(obj, "newSz"), price=_decimal(obj, "newPx"),
                      client_order_id=_cl_ord_id(obj), **_instrument_fields(inst))
    _check_fields(obj, _ORDER_FIELDS, "order")
    inst = _inst_id(obj, True)
    assert inst is not None
    side = _text(obj, "side")
    if side not in _SIDES:
        raise BadRequest("side: use buy or sell")
    otype = _text(obj, "ordType")
    if otype not in _PRICED | _UNPRICED:
        raise BadRequest(f"ordType: use one of {', '.join(sorted(_PRICED | _UNPRICED))}")
    td_mode = _text(obj, "tdMode")
    if td_mode not in _TD_MODES:
        raise BadRequest("tdMode: required; use cash, cross, isolated or spot_isolated")
    tag = _text(obj, "tag")
    if tag is not None and not _TAG.fullmatch(tag):
        raise BadRequest("tag: 1-16 letters and digits")
    size, price = _decimal(obj, "sz"), _decimal(obj, "px")
    if size is None:
        raise BadRequest("sz: required")
    if otype in _PRICED and price is None:
        raise BadRequest(f"px: required for a {otype} order")
    if otype in _UNPRICED and price is not None:
        raise BadRequest(f"px: not allowed on a {otype} order")
    spot = inst.count("-") == 1
    target = _text(obj, "tgtCcy")
    spot_market = spot and otype == "market"
    if target not in (None, "base_ccy", "quote_ccy"):
        raise BadRequest("tgtCcy: use base_ccy or quote_ccy")
    # base_ccy is what sz already means on any spot order (ccxt sends it on limit orders);
    # quote_ccy changes the unit, which OKX documents only for spot (cash) market orders.
    if target is not None and not spot:
        raise BadRequest("tgtCcy: only for spot instruments")
    if target == "quote_ccy" and not (spot_market and td_mode == "cash"):
        raise BadRequest("tgtCcy quote_ccy: only for spot (tdMode cash) market orders")
    if spot_market and td_mode != "cash":
        raise BadRequest("a margin market order's sz unit is not documented unambiguously; "
                         "use tdMode cash or a priced ioc order")
    # OKX: tgtCcy "Default is quote_ccy for buy, base_ccy for sell" on spot market orders.
    default = "quote_ccy" if side == "buy" else "base_ccy"
    by_quote = spot_market and (target or default) == "quote_ccy"
    return Intent(
        symbol=inst, side=side, order_type=otype, time_in_force=_EFFECTIVE_TIF[otype],
        quantity=None if by_quote else size, quote_quantity=size if by_quote else None,
        price=price, client_order_id=_cl_ord_id(obj), **_instrument_fields(inst),
    )


#: OKX has no time-in-force field: the order type carries it (OKX-DOC "Place order" ordType:
#: limit and post_only rest until cancelled, optimal_limit_ioc is "market order with
#: immediate-or-cancel", fok/ioc/op_fok as named, mmp orders are limit orders of market
#: makers). A plain market order has none.
_EFFECTIVE_TIF: Mapping[str, str | None] = {
    "limit": "gtc", "post_only": "gtc", "mmp": "gtc", "mmp_and_post_only": "gtc",
    "ioc": "ioc", "optimal_limit_ioc": "ioc", "fok": "fok", "op_fok": "fok", "market": None,
}


def instrument_type(inst: str) -> str:
    """OKX's instType from an instId's documented shape: BTC-USDT (SPOT), BTC-USD-SWAP (SWAP),
    BTC-USD-250328 (FUTURES), BTC-USD-250328-50000-C (OPTION); "" for any other shape."""
    parts = inst.split("-")
    if len(parts) == 2:
        return "SPOT"
    if len(parts) == 3:
        return "SWAP" if parts[2] == "SWAP" else "FUTURES" if parts[2].isdigit() else ""
    if len(parts) == 5 and parts[4] in ("C", "P"):
        return "OPTION"
    return ""


def _instrument_fields(inst: str) -> dict[str, Any]:
    """A spot sz counts base units (known from the request); any other instrument is read from
    /api/v5/public/instruments before a notional rule can apply."""
    kind = instrument_type(inst)
    if kind == "SPOT":
        return {"instrument": Instrument(inst, "spot"), "market": "SPOT"}
    return {"market": kind}


def parse_instrument(symbol: str, market: str, body: bytes) -> Instrument:
    """One SWAP or FUTURES instrument from ``/api/v5/public/instruments``: ``ctType`` linear
    (``ctVal`` x ``ctMult`` base units a contract, ``ctValCcy`` the base currency) or inverse
    (``ctVal`` x ``ctMult`` quote units a contract, ``ctValCcy`` the quote currency)."""
    data = instrument_answer(body)
    if not isinstance(data, dict) or data.get("code") != "0":
        raise InstrumentError("okx instruments: code is not \"0\"")
    items = data.get("data")
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        raise InstrumentError("okx instruments: expected exactly one instrument")
    item = items[0]
    if item.get("instId") != symbol or item.get("instType") != market:
        raise InstrumentError("okx instruments: the answer is for another instrument")
    size = positive_decimal(item.get("ctVal"), "ctVal") * positive_decimal(item.get("ctMult"), "ctMult")
    base, quote = symbol.split("-")[:2]
    kind, currency = item.get("ctType"), item.get("ctValCcy")
    if kind == "linear" and currency == base:
        return Instrument(symbol, "linear", size)
    if kind == "inverse" and currency == quote:
        return Instrument(symbol, "inverse", size)
    raise InstrumentError(f"okx instruments: ctType {kind!r} with ctValCcy {currency!r} is not "
                          "a documented contract")


EXCHANGE = Okx()
TESTNET = Okx(simulated_trading=True)
