"""Bybit v5 (spot, linear, inverse and option through the unified ``/v5`` API).

Signing (docs/exchanges.md §2): ``timestamp + api_key + recv_window + payload`` where the payload is the
query string exactly as sent (GET) or the JSON body exactly as sent (POST); HMAC keys sign
lower-case hex HMAC-SHA256, RSA keys base64 RSASSA-PKCS1-v1_5/SHA-256. Authentication lives
only in the ``X-BAPI-*`` headers, which sign() builds from scratch; the proxy sets its own
``X-BAPI-RECV-WINDOW``.

Quantity semantics (docs/exchanges.md §2, BYB-ORDER): a spot Market order's ``qty`` is quote currency
when ``marketUnit`` is ``quoteCoin``, or by default for a Buy; otherwise ``qty`` is the
exchange's own quantity (base coin spot/linear, contracts inverse/option).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from proxy.errors import BadRequest, InstrumentError
from proxy.exchanges.base import (
    Catalogue,
    Credentials,
    Environment,
    NonceUnit,
    drop_keys,
    dump_json,
    encode_pairs,
    endpoint,
    instrument_answer,
    parse_json_object,
    parse_pairs,
    require_content_type,
)
from proxy.exchanges.base import (
    json_text as _text,
)
from proxy.exchanges.base import (
    require_secret as _require,
)
from proxy.exchanges.bybit.capabilities import CAPABILITIES, CLIENT_ORDER_ID_RULES, lookup_result
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import (
    Lookup,
    batch_inbound_with,
    inbound_with,
    lookup_inbound,
    member_appended,
)
from proxy.model.decimals import parse_decimal
from proxy.model.request import Action, Category, Inbound, Instrument, Intent, Outbound, Prepared, Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey, RsaKey, load_pem_private_key, looks_like_pem

P, R, T, C = Category.PUBLIC, Category.READ, Category.TRADE, Category.CANCEL
W, X, A = Category.WITHDRAW, Category.TRANSFER, Category.ADMIN

CATALOGUE = Catalogue([
    # public market data
    *(endpoint("GET", f"/v5/market/{p}", P) for p in (
        "time", "instruments-info", "tickers", "orderbook", "kline", "mark-price-kline",
        "index-price-kline", "premium-index-price-kline", "recent-trade", "funding/history",
        "open-interest", "historical-volatility", "insurance", "risk-limit", "delivery-price",
    )),
    # reads (query-api reads the key's own permissions: ccxt needs it for balances and orders)
    *(endpoint("GET", f"/v5/{p}", R) for p in (
        "account/wallet-balance", "account/info", "account/fee-rate", "account/transaction-log",
        "user/query-api", "asset/coin/query-info", "order/realtime", "order/history",
        "execution/list", "position/list", "order/spot-borrow-check",
    )),
    # trading
    endpoint("POST", "/v5/order/create", T, name="order"),
    endpoint("POST", "/v5/order/create-batch", T, name="order", batch=True),
    endpoint("POST", "/v5/order/amend", T, Action.AMEND, name="order"),
    endpoint("POST", "/v5/order/amend-batch", T, Action.AMEND, name="order", batch=True),
    endpoint("POST", "/v5/order/cancel", C),
    endpoint("POST", "/v5/order/cancel-batch", C, batch=True),
    endpoint("POST", "/v5/order/cancel-all", C),
    # never: catalogued so that the refusal names the category (unlisted paths are refused too)
    endpoint("POST", "/v5/asset/withdraw/create", W),
    endpoint("POST", "/v5/asset/withdraw/cancel", W),
    endpoint("POST", "/v5/asset/transfer/inter-transfer", X),
    endpoint("POST", "/v5/asset/transfer/universal-transfer", X),
    *(endpoint("POST", f"/v5/user/{p}", A) for p in (
        "create-sub-api", "update-api", "update-sub-api", "delete-api", "delete-sub-api",
        "create-sub-member", "frozen-sub-member",
    )),
    endpoint("GET", "/v5/asset/withdraw/query-address", A),
])

#: Authentication a bot (or ccxt's pre-v5 code) may put in a query string or body.
AUTH_PARAMS = ("api_key", "sign", "sign_type", "timestamp", "recv_window")

_SYMBOL = re.compile(r"[A-Z0-9\-]{1,40}")
_ORDER_LINK_ID = re.compile(r"[A-Za-z0-9\-_]{1,36}")
_CATEGORIES = frozenset({"spot", "linear", "inverse", "option"})
_SIDES = {"Buy": "buy", "Sell": "sell"}
_TYPES = {"Market": "market", "Limit": "limit"}
_TIFS = frozenset({"GTC", "IOC", "FOK", "PostOnly", "RPI"})
#: Prices the exchange uses besides ``price``, each checked against the price band.
_OTHER_PRICES = ("triggerPrice", "takeProfit", "stopLoss", "tpLimitPrice", "slLimitPrice")
_MONEY = ("qty", "price", *_OTHER_PRICES, "slippageTolerance")
_ORDER_FIELDS = frozenset({
    "category", "symbol", "isLeverage", "side", "orderType", "qty", "marketUnit",
    "slippageToleranceType", "slippageTolerance", "price", "triggerDirection", "orderFilter",
    "triggerPrice", "triggerBy", "timeInForce", "positionIdx", "orderLinkId",
    "takeProfit", "stopLoss", "tpTriggerBy", "slTriggerBy", "reduceOnly", "closeOnTrigger",
    "smpType", "mmp", "tpslMode", "tpLimitPrice", "slLimitPrice", "tpOrderType", "slOrderType",
})
_AMEND_FIELDS = frozenset({
    "category", "symbol", "orderId", "orderLinkId", "triggerPrice", "qty", "price",
    "tpslMode", "takeProfit", "stopLoss", "tpTriggerBy", "slTriggerBy", "triggerBy",
    "tpLimitPrice", "slLimitPrice",
})
_CANCEL_FIELDS = frozenset({
    "category", "symbol", "orderId", "orderLinkId", "orderFilter", "baseCoin", "settleCoin",
    "stopOrderType",
})
MAX_BATCH = 20


@dataclass(frozen=True)
class Bybit:
    """The Bybit v5 exchange. ``recv_window`` (ms) is what the proxy sends and signs."""

    name: str = "bybit"
    nonce_unit: NonceUnit | None = None
    recv_window: int = 5000

    @property
    def capabilities(self) -> Capabilities:
        """What generic code may ask of Bybit: the "capabilities" section below."""
        return CAPABILITIES

    def base_url(self, environment: Environment) -> str:
        return {"live": "https://api.bybit.com", "testnet": "https://api-testnet.bybit.com"}[
            environment
        ]

    def load_credentials(self, fields: Mapping[str, Secret], version: int) -> Credentials:
        api_key, secret = _require(fields, "api_key"), _require(fields, "api_secret")
        key: HmacKey | RsaKey
        if looks_like_pem(secret):
            loaded = load_pem_private_key(secret)
            if not isinstance(loaded, RsaKey):
                raise ValueError("api_secret: Bybit takes HMAC secrets or RSA private keys")
            key = loaded
        else:
            key = HmacKey(secret)
        return Credentials(api_key=api_key.reveal(), key=key, version=version)

    def prepare(self, inbound: Inbound) -> Prepared:
        ep = CATALOGUE.lookup(inbound.method, inbound.raw_path)
        if inbound.method == "GET":
            if inbound.body:
                raise BadRequest("body: send GET parameters in the query string")
            query = drop_keys(parse_pairs(inbound.raw_query, "query"), AUTH_PARAMS)
            params: dict[str, Any] = dict(query)
            intents = _read_intents(ep.category, params)
            return Prepared(
                method="GET", path=ep.path, query=encode_pairs(query), body=b"",
                content_type=None, endpoint=ep, intents=intents,
            )
        if inbound.raw_query:
            raise BadRequest("query: Bybit signs only the JSON body of a POST; put every "
                             "parameter in the body")
        require_content_type(inbound, "application/json")
        obj = parse_json_object(inbound.body) if inbound.body else {}
        obj = {k: v for k, v in obj.items() if k not in AUTH_PARAMS}
        intents = _post_intents(ep.action, ep.batch, obj)
        return Prepared(
            method="POST", path=ep.path, query="", body=dump_json(obj).encode(),
            content_type="application/json", endpoint=ep, intents=intents,
        )

    def with_client_order_id(self, prepared: Prepared, coid: str) -> Prepared:
        """``prepared`` (an order without an id) with the client order id added: appended to
        the canonical JSON without parsing the order again (``prepare`` keeps the members in
        order and reads the id from nowhere else), else by a re-parse."""
        field = CLIENT_ORDER_ID_RULES.field
        fast = member_appended(prepared, field, coid) if _ORDER_LINK_ID.fullmatch(coid) else None
        return fast or self.prepare(inbound_with(prepared, field, coid))

    def order_lookups(self, prepared: Prepared) -> tuple[Prepared, ...]:
        """``GET /v5/order/realtime?category=..&symbol=..&orderLinkId=..``: by id, Bybit also
        returns recently closed orders."""
        intent = prepared.intents[0]
        assert intent.symbol is not None and intent.client_order_id is not None
        category = str(parse_json_object(prepared.body).get("category", "spot"))
        params = [("category", category), ("symbol", intent.symbol),
                  ("orderLinkId", intent.client_order_id)]
        return (self.prepare(lookup_inbound("GET", "/v5/order/realtime", params)),)

    def lookup_result(self, status: int, body: bytes) -> Lookup:
        """retCode 0 with the order in ``result.list``: found; with an empty list: absent."""
        return lookup_result(status, body)

    def with_batch_client_order_ids(self, prepared: Prepared, ids: Sequence[str | None]) -> Prepared:
        """``prepared`` (a batch placement) with ``ids[i]`` added to order ``i`` that has none."""
        values = [c for c in ids]
        return self.prepare(batch_inbound_with(prepared, "request", CLIENT_ORDER_ID_RULES.field, values))

    def instrument_request(self, symbol: str, market: str) -> Outbound:
        """``GET /v5/market/instruments-info?category=..&symbol=..`` (linear and inverse)."""
        if market not in ("linear", "inverse") or not _SYMBOL.fullmatch(symbol):
            raise InstrumentError(f"no Bybit instrument table for category {market!r}")
        return Outbound("GET", "/v5/market/instruments-info?"
                        + encode_pairs([("category", market), ("symbol", symbol)]), (), b"")

    def parse_instrument(self, symbol: str, market: str, body: bytes) -> Instrument:
        return parse_instrument(symbol, market, body)

    def sign(self, prepared: Prepared, creds: Credentials, stamp: Stamp, host: str) -> Outbound:
        target = f"{prepared.path}?{prepared.query}" if prepared.query else prepared.path
        if prepared.category is Category.PUBLIC:
            return Outbound(prepared.method, target, (), prepared.body, stamp)
        timestamp, window = str(stamp.now_ms), str(self.recv_window)
        payload = prepared.query.encode() if prepared.method == "GET" else prepared.body
        signed = (timestamp + creds.api_key + window).encode() + payload
        headers = (
            ("Content-Type", "application/json"),
            ("X-BAPI-API-KEY", creds.api_key),
            ("X-BAPI-TIMESTAMP", timestamp),
            ("X-BAPI-RECV-WINDOW", window),
            ("X-BAPI-SIGN", signature_for(creds, signed)),
        )
        return Outbound(prepared.method, target, headers, prepared.body, stamp)


def signature_for(creds: Credentials, message: bytes) -> str:
    """``X-BAPI-SIGN``: lower-case hex HMAC-SHA256, or base64 RSA PKCS#1 v1.5 SHA-256."""
    key = creds.key
    if isinstance(key, HmacKey):
        return key.hexdigest(message)
    if isinstance(key, RsaKey):
        return base64.b64encode(key.sign_pkcs1_sha256(message)).decode()
    raise TypeError("Bybit signs with HMAC or RSA keys")


# ---------------------------------------------------------------- intents


def _symbol(obj: Mapping[str, Any], required: bool) -> str | None:
    symbol = _text(obj, "symbol")
    if symbol is None:
        if required:
            raise BadRequest("symbol: required, e.g. BTCUSDT")
        return None
    if not _SYMBOL.fullmatch(symbol):
        raise BadRequest("symbol: use Bybit's upper-case symbol, e.g. BTCUSDT")
    return symbol


def _category(obj: Mapping[str, Any]) -> str:
    category = _text(obj, "category")
    if category not in _CATEGORIES:
        raise BadRequest("category: required; use spot, linear, inverse or option")
    return category


def _link_id(obj: Mapping[str, Any]) -> str | None:
    coid = _text(obj, "orderLinkId")
    if coid is not None and not _ORDER_LINK_ID.fullmatch(coid):
        raise BadRequest("orderLinkId: 1-36 characters from a-z, A-Z, 0-9, '-' and '_'")
    return coid


def _money(obj: Mapping[str, Any]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for name in _MONEY:
        if name in obj:
            text = obj[name]
            if not isinstance(text, str):
                raise BadRequest(f"{name}: send decimals as JSON strings, e.g. \"0.01\"")
            out[name] = parse_decimal(text, name)
    return out


def _check_fields(obj: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise BadRequest(f"{unknown[0]!r} is not a {what} parameter this proxy understands")
    for key, value in obj.items():
        if isinstance(value, dict | list):
            raise BadRequest(f"{key}: nested values are not allowed here")


def _read_intents(category: Category, params: Mapping[str, Any]) -> tuple[Intent, ...]:
    if category is not Category.READ:
        return ()
    return (Intent(symbol=_symbol(params, False), client_order_id=_link_id(params)),)


def _post_intents(action: Action, batch: bool, obj: dict[str, Any]) -> tuple[Intent, ...]:
    if action is Action.PUBLIC or action is Action.QUERY:
        return ()
    if not batch:
        return (_one(action, obj, _category(obj)),)
    unknown = sorted(set(obj) - {"category", "request"})
    if unknown:
        raise BadRequest(f"{unknown[0]!r}: a batch body has only 'category' and 'request'")
    category = _category(obj)
    items = obj.get("request")
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
        raise BadRequest(f"request: a list of 1-{MAX_BATCH} orders")
    if not all(isinstance(item, dict) for item in items):
        raise BadRequest("request: every entry must be a JSON object")
    if any("category" in item for item in items):
        raise BadRequest("request: give 'category' once, at the top level")
    return tuple(_one(action, {"category": category, **item}, category) for item in items)


def _one(action: Action, obj: Mapping[str, Any], category: str) -> Intent:
    if "orderIv" in obj and action is not Action.CANCEL:  # BYB-ORDER: "priority over price"
        raise BadRequest("orderIv: it sets a price the policy cannot check; send price instead")
    if action is Action.CANCEL:
        _check_fields(obj, _CANCEL_FIELDS, "cancel")
        return Intent(symbol=_symbol(obj, False), client_order_id=_link_id(obj))
    if action is Action.AMEND:
        _check_fields(obj, _AMEND_FIELDS, "amend")
        if "orderId" not in obj and "orderLinkId" not in obj:
            raise BadRequest("amend: send orderId or orderLinkId")
        values = _money(obj)
        symbol = _symbol(obj, True)
        assert symbol is not None
        return Intent(
            symbol=symbol, quantity=values.get("qty"), price=values.get("price"),
            client_order_id=_link_id(obj), prices=_other_prices(values),
            **_instrument_fields(symbol, category),
        )
    _check_fields(obj, _ORDER_FIELDS, "order")
    symbol = _symbol(obj, True)
    assert symbol is not None
    side = _text(obj, "side")
    if side not in _SIDES:
        raise BadRequest("side: use Buy or Sell")
    otype = _text(obj, "orderType")
    if otype not in _TYPES:
        raise BadRequest("orderType: use Market or Limit")
    tif = _text(obj, "timeInForce")
    if tif is not None and tif not in _TIFS:
        raise BadRequest(f"timeInForce: use one of {', '.join(sorted(_TIFS))}")
    values = _money(obj)
    qty = values.get("qty")
    if qty is None:
        raise BadRequest("qty: required")
    price = values.get("price")
    if otype == "Limit" and price is None:
        raise BadRequest("price: required for a Limit order")
    if otype == "Market" and price is not None:
        raise BadRequest("price: not allowed on a Market order")
    unit = _text(obj, "marketUnit")
    if unit is not None and (category != "spot" or otype != "Market"):
        raise BadRequest("marketUnit: only for spot Market orders")
    if unit not in (None, "baseCoin", "quoteCoin"):
        raise BadRequest("marketUnit: use baseCoin or quoteCoin")
    # BYB-ORDER: "Spot: Market Buy order by value by default".
    by_value = category == "spot" and otype == "Market" and (
        unit == "quoteCoin" or (unit is None and side == "Buy")
    )
    return Intent(
        symbol=symbol, side=_SIDES[side], order_type=_TYPES[otype],
        time_in_force=_effective_tif(otype, tif),
        quantity=None if by_value else qty, quote_quantity=qty if by_value else None,
        price=price, client_order_id=_link_id(obj), prices=_other_prices(values),
        legs=_tpsl_legs(obj, symbol, _SIDES[side], values), **_instrument_fields(symbol, category),
    )


def _effective_tif(otype: str, tif: str | None) -> str:
    """BYB-ORDER: a Market order becomes an IOC limit order; a Limit order defaults to GTC."""
    return "IOC" if otype == "Market" else tif if tif is not None else "GTC"


def _other_prices(values: Mapping[str, Decimal]) -> tuple[Decimal, ...]:
    return tuple(values[k] for k in _OTHER_PRICES if k in values)


def _tpsl_legs(obj: Mapping[str, Any], symbol: str, side: str,
               values: Mapping[str, Decimal]) -> tuple[Intent, ...]:
    """The orders Bybit places when ``takeProfit``/``stopLoss`` trigger: the opposite side,
    ``tpOrderType``/``slOrderType`` (Market unless Limit), at ``tpLimitPrice``/``slLimitPrice``."""
    legs = []
    for trigger, kind, limit in (("takeProfit", "tpOrderType", "tpLimitPrice"),
                                 ("stopLoss", "slOrderType", "slLimitPrice")):
        otype = _text(obj, kind)
        if otype not in (None, *_TYPES) or (trigger not in values and (otype or limit in values)):
            raise BadRequest(f"{kind}: Market or Limit, and {kind}/{limit} only with {trigger}")
        if trigger not in values:
            continue
        otype = otype or "Market"
        if (otype == "Limit") != (limit in values):
            raise BadRequest(f"{limit}: required with {kind}=Limit, and only then")
        legs.append(Intent(symbol=symbol, side="sell" if side == "buy" else "buy", order_type=_TYPES[otype],
                           time_in_force=_effective_tif(otype, None), price=values.get(limit)))
    return tuple(legs)


def _instrument_fields(symbol: str, category: str) -> dict[str, Any]:
    """Spot qty counts base units (or quote, by marketUnit); contracts are read from
    /v5/market/instruments-info before a notional rule applies."""
    spot = {"instrument": Instrument(symbol, "spot")} if category == "spot" else {}
    return {"market": category, **spot}


_CONTRACT_TYPES = {"LinearPerpetual": "linear", "LinearFutures": "linear",
                   "InversePerpetual": "inverse", "InverseFutures": "inverse"}


def parse_instrument(symbol: str, market: str, body: bytes) -> Instrument:
    """A linear or inverse instrument from ``/v5/market/instruments-info``. BYB-ORDER ``qty``:
    linear contracts count the base coin, inverse contracts USD (1 USD a contract); the
    category must agree with ``contractType``."""
    data = instrument_answer(body)
    result = data.get("result") if isinstance(data, dict) and data.get("retCode") == 0 else None
    items = result.get("list") if isinstance(result, dict) and result.get("category") == market else None
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        raise InstrumentError("bybit instruments: expected exactly one instrument of the category")
    item = items[0]
    kind = _CONTRACT_TYPES.get(str(item.get("contractType")))
    if item.get("symbol") != symbol or item.get("status") != "Trading" or kind != market:
        raise InstrumentError("bybit instruments: another instrument or category, or not trading")
    return Instrument(symbol, "linear" if kind == "linear" else "inverse")


EXCHANGE = Bybit()
