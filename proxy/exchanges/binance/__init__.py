"""Binance spot (``/api/v3`` and the few ``/sapi`` reads a trading bot needs).

Signing (SPECS.md §1): the payload is the raw query string concatenated, without separator, to
the raw body, as sent. HMAC keys sign hex HMAC-SHA256; Ed25519 and RSA (PKCS#1 v1.5, SHA-256)
keys sign base64, percent-encoded. ``timestamp`` goes first, ``recvWindow`` (when the account sets its own)
after the bot's parameters and ``signature`` last, in the body when there is one, else in the
query string.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from proxy.errors import BadRequest
from proxy.exchanges.base import (
    Catalogue,
    Credentials,
    Environment,
    NonceUnit,
    drop_keys,
    encode_pairs,
    endpoint,
    split_query_and_body,
)
from proxy.exchanges.base import (
    require_secret as _require,
)
from proxy.exchanges.binance.capabilities import CAPABILITIES, CLIENT_ORDER_ID_RULES, lookup_result
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import (
    Lookup,
    inbound_with,
    lookup_inbound,
)
from proxy.model.decimals import parse_decimal
from proxy.model.request import Action, Category, Inbound, Instrument, Intent, Outbound, Prepared, Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import Ed25519Key, HmacKey, RsaKey, load_pem_private_key, looks_like_pem

P, R, T, C = Category.PUBLIC, Category.READ, Category.TRADE, Category.CANCEL
W, X, A = Category.WITHDRAW, Category.TRANSFER, Category.ADMIN

CATALOGUE = Catalogue([
    # public market data
    *(endpoint("GET", f"/api/v3/{p}", P) for p in (
        "ping", "time", "exchangeInfo", "depth", "trades", "aggTrades", "klines", "uiKlines",
        "avgPrice", "ticker/24hr", "ticker/price", "ticker/bookTicker", "ticker",
        "ticker/tradingDay",
    )),
    # reads
    *(endpoint("GET", f"/api/v3/{p}", R) for p in (
        "account", "order", "openOrders", "allOrders", "myTrades", "orderList", "allOrderList",
        "openOrderList", "rateLimit/order", "myPreventedMatches", "myAllocations",
        "account/commission",
    )),
    endpoint("GET", "/sapi/v1/account/apiRestrictions", R),
    endpoint("GET", "/sapi/v1/capital/config/getall", R),
    endpoint("GET", "/sapi/v1/asset/tradeFee", R),
    # ccxt's load_markets reads these by default (options.fetchMargins)
    endpoint("GET", "/sapi/v1/margin/allPairs", R),
    endpoint("GET", "/sapi/v1/margin/isolated/allPairs", R),
    # trading
    endpoint("POST", "/api/v3/order", T, name="order"),
    endpoint("POST", "/api/v3/order/test", T, Action.VALIDATE, name="order"),
    endpoint("POST", "/api/v3/order/cancelReplace", T, Action.AMEND, name="order"),
    endpoint("DELETE", "/api/v3/order", C),
    endpoint("DELETE", "/api/v3/openOrders", C),
    endpoint("DELETE", "/api/v3/orderList", C),
    # never: catalogued so that the refusal names the category (unlisted paths are refused too)
    endpoint("POST", "/sapi/v1/capital/withdraw/apply", W),
    endpoint("POST", "/sapi/v1/asset/transfer", X),
    endpoint("POST", "/sapi/v1/sub-account/universalTransfer", X),
    endpoint("POST", "/sapi/v1/sub-account/transfer/subToMaster", X),
    endpoint("POST", "/sapi/v1/sub-account/transfer/subToSub", X),
    endpoint("POST", "/sapi/v2/sub-account/subAccountApi/ipRestriction", A),
    endpoint("DELETE", "/sapi/v1/sub-account/subAccountApi/ipRestriction/ipList", A),
    endpoint("POST", "/sapi/v1/broker/subAccountApi", A),
    endpoint("DELETE", "/sapi/v1/broker/subAccountApi", A),
    endpoint("POST", "/sapi/v1/broker/subAccountApi/permission", A),
    endpoint("POST", "/sapi/v1/broker/subAccountApi/ipRestriction", A),
])

#: Authentication a bot (or ccxt) may have added; replaced by the proxy's own.
AUTH_PARAMS = ("signature", "timestamp")

_SYMBOL = re.compile(r"[A-Z0-9_.\-]{1,30}")
_CLIENT_ORDER_ID = re.compile(r"[a-zA-Z0-9\-_]{1,36}")
_SIDES = {"BUY": "buy", "SELL": "sell"}
_TYPES = {
    "LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT",
    "LIMIT_MAKER",
}
_TIFS = {"GTC", "IOC", "FOK"}
_DECIMALS = ("quantity", "quoteOrderQty", "price", "stopPrice", "icebergQty")
_ORDER_PARAMS = frozenset({
    "symbol", "side", "type", "timeInForce", "quantity", "quoteOrderQty", "price",
    "newClientOrderId", "strategyId", "strategyType", "stopPrice",
    "icebergQty", "newOrderRespType", "selfTradePreventionMode", "recvWindow",
    "computeCommissionRates",
})
#: Parameters that make Binance set or move the price itself (BIN-REST "New order (TRADE)": pegged
#: orders take their price from the book, pegPriceType/pegOffsetValue/pegOffsetType; a
#: trailing stop moves its trigger with the market, trailingDelta): no price the policy
#: could check exists when the order is sent, so they are refused.
_SELF_PRICING = ("pegPriceType", "pegOffsetValue", "pegOffsetType", "trailingDelta")
_AMEND_PARAMS = _ORDER_PARAMS | {
    "cancelReplaceMode", "cancelNewClientOrderId", "cancelOrigClientOrderId", "cancelOrderId",
    "cancelRestrictions", "orderRateLimitExceededMode",
}


@dataclass(frozen=True)
class Binance:
    """The Binance spot exchange. ``recv_window`` (ms), when set, replaces the bot's."""

    name: str = "binance"
    nonce_unit: NonceUnit | None = None
    recv_window: int | None = None

    @property
    def capabilities(self) -> Capabilities:
        """What generic code may ask of Binance: the "capabilities" section below."""
        return CAPABILITIES

    def base_url(self, environment: Environment) -> str:
        return {"live": "https://api.binance.com", "testnet": "https://testnet.binance.vision"}[
            environment
        ]

    def load_credentials(self, fields: Mapping[str, Secret], version: int) -> Credentials:
        api_key, secret = _require(fields, "api_key"), _require(fields, "api_secret")
        key: HmacKey | Ed25519Key | RsaKey
        if looks_like_pem(secret):
            loaded = load_pem_private_key(secret)
            if not isinstance(loaded, Ed25519Key | RsaKey):
                raise ValueError("api_secret: Binance takes HMAC, Ed25519 or RSA keys")
            key = loaded
        else:
            key = HmacKey(secret)
        return Credentials(api_key=api_key.reveal(), key=key, version=version)

    def prepare(self, inbound: Inbound) -> Prepared:
        ep = CATALOGUE.lookup(inbound.method, inbound.raw_path)
        query, body = split_query_and_body(inbound)
        if inbound.method in ("GET", "DELETE") and body:
            raise BadRequest(f"body: send {inbound.method} parameters in the query string")
        stripped = AUTH_PARAMS + (("recvWindow",) if self.recv_window is not None else ())
        query, body = drop_keys(query, stripped), drop_keys(body, stripped)
        params = dict(query + body)
        if "recvWindow" in params:
            window = parse_decimal(params["recvWindow"], "recvWindow")
            if window > 60000:
                raise BadRequest("recvWindow: at most 60000 ms")
        intents: tuple[Intent, ...] = ()
        if ep.category in (Category.TRADE, Category.CANCEL, Category.READ):
            intents = (_intent(ep.action, ep.category, params),)
        return Prepared(
            method=inbound.method, path=ep.path if "{" not in ep.path else inbound.raw_path,
            query=encode_pairs(query), body=encode_pairs(body).encode(),
            content_type="application/x-www-form-urlencoded" if body else None,
            endpoint=ep, intents=intents,
        )

    def with_client_order_id(self, prepared: Prepared, coid: str) -> Prepared:
        """``prepared`` (an order without an id) with ``newClientOrderId`` added."""
        return self.prepare(inbound_with(prepared, CLIENT_ORDER_ID_RULES.field, coid))

    def order_lookups(self, prepared: Prepared) -> tuple[Prepared, ...]:
        """``GET /api/v3/order?symbol=..&origClientOrderId=..`` for a placed order."""
        intent = prepared.intents[0]
        assert intent.symbol is not None and intent.client_order_id is not None
        params = [("symbol", intent.symbol), ("origClientOrderId", intent.client_order_id)]
        return (self.prepare(lookup_inbound("GET", "/api/v3/order", params)),)

    def lookup_result(self, status: int, body: bytes) -> Lookup:
        """200 with the order: found; -2013 "Order does not exist": absent."""
        return lookup_result(status, body)

    def sign(self, prepared: Prepared, creds: Credentials, stamp: Stamp, host: str) -> Outbound:
        if prepared.category is Category.PUBLIC:
            return _outbound(prepared, prepared.query, prepared.body, (), stamp)
        # timestamp first and recvWindow after the bot's parameters, as ccxt sends them, so a
        # ccxt request through the proxy is byte-identical to one sent by ccxt directly.
        lead = f"timestamp={stamp.now_ms}"
        tail = f"&recvWindow={self.recv_window}" if self.recv_window is not None else ""
        query, body = prepared.query, prepared.body.decode()
        if body:
            body = f"{lead}&{body}{tail}"
        else:
            query = f"{lead}&{query}{tail}" if query else f"{lead}{tail}"
        signature = signature_for(creds, (query + body).encode())
        if body:
            body = f"{body}&signature={signature}"
        else:
            query = f"{query}&signature={signature}"
        headers = (("X-MBX-APIKEY", creds.api_key),)
        return _outbound(prepared, query, body.encode(), headers, stamp)


def signature_for(creds: Credentials, payload: bytes) -> str:
    """The ``signature`` parameter value, already encoded for the wire."""
    key = creds.key
    if isinstance(key, HmacKey):
        return key.hexdigest(payload)
    if isinstance(key, Ed25519Key):
        raw = key.sign(payload)
    elif isinstance(key, RsaKey):
        raw = key.sign_pkcs1_sha256(payload)
    else:
        raise TypeError("Binance signs with HMAC, Ed25519 or RSA keys")
    return quote(base64.b64encode(raw).decode(), safe="")


def _outbound(
    prepared: Prepared, query: str, body: bytes, headers: tuple[tuple[str, str], ...], stamp: Stamp
) -> Outbound:
    if prepared.content_type and body:
        headers = (*headers, ("Content-Type", prepared.content_type))
    target = f"{prepared.path}?{query}" if query else prepared.path
    return Outbound(prepared.method, target, headers, body, stamp)


def _intent(action: Action, category: Category, params: Mapping[str, str]) -> Intent:
    symbol = params.get("symbol")
    if symbol is not None and not _SYMBOL.fullmatch(symbol):
        raise BadRequest("symbol: use the exchange's upper-case symbol, e.g. BTCUSDT")
    if category is not Category.TRADE:
        if category is Category.CANCEL and symbol is None:
            raise BadRequest("symbol: required to cancel")
        coid = params.get("origClientOrderId")
        return Intent(symbol=symbol, client_order_id=coid)
    allowed = _AMEND_PARAMS if action is Action.AMEND else _ORDER_PARAMS
    pegged = [k for k in _SELF_PRICING if k in params]
    if pegged:
        raise BadRequest(f"{pegged[0]}: pegged and trailing orders let the exchange set the price, "
                         "which the policy cannot check; send a price (and stopPrice)")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise BadRequest(f"{unknown[0]!r} is not an order parameter this proxy understands")
    if symbol is None:
        raise BadRequest("symbol: required for an order")
    side = params.get("side")
    if side not in _SIDES:
        raise BadRequest("side: use BUY or SELL")
    otype = params.get("type")
    if otype not in _TYPES:
        raise BadRequest(f"type: use one of {', '.join(sorted(_TYPES))}")
    tif = params.get("timeInForce")
    if tif is not None and tif not in _TIFS:
        raise BadRequest("timeInForce: use GTC, IOC or FOK")
    values = {f: parse_decimal(params[f], f) for f in _DECIMALS if f in params}
    qty, quote_qty = values.get("quantity"), values.get("quoteOrderQty")
    if qty is not None and quote_qty is not None:
        raise BadRequest("send quantity or quoteOrderQty, not both")
    if qty is None and quote_qty is None:
        raise BadRequest("quantity: required (or quoteOrderQty for a MARKET order)")
    if quote_qty is not None and otype != "MARKET":
        raise BadRequest("quoteOrderQty: only for MARKET orders")
    if otype != "MARKET" and "price" not in values and otype not in ("STOP_LOSS", "TAKE_PROFIT"):
        raise BadRequest(f"price: required for a {otype} order")
    if otype == "MARKET" and "price" in values:
        raise BadRequest("price: not allowed on a MARKET order")
    coid = params.get("newClientOrderId")
    if coid is not None and not _CLIENT_ORDER_ID.fullmatch(coid):
        raise BadRequest("newClientOrderId: 1-36 characters from a-z, A-Z, 0-9, '-' and '_'")
    if otype in ("STOP_LOSS", "TAKE_PROFIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") \
            and "stopPrice" not in values:
        raise BadRequest(f"stopPrice: required for a {otype} order")
    if "stopPrice" in values and otype in ("LIMIT", "MARKET", "LIMIT_MAKER"):
        raise BadRequest(f"stopPrice: not used by a {otype} order; omit it")
    stop = values.get("stopPrice")
    return Intent(
        symbol=symbol, side=_SIDES[side], order_type=otype.lower(),
        time_in_force=tif if tif is not None else _DEFAULT_TIF.get(otype), quantity=qty,
        quote_quantity=quote_qty, price=values.get("price"), client_order_id=coid,
        instrument=Instrument(symbol, "spot"), prices=(stop,) if stop is not None else (),
    )


#: BIN-REST "New order (TRADE)": LIMIT_MAKER is a post-only limit order that rests until cancelled and
#: takes no timeInForce; MARKET, STOP_LOSS and TAKE_PROFIT orders have none.
_DEFAULT_TIF = {"LIMIT_MAKER": "GTC"}


EXCHANGE = Binance()
