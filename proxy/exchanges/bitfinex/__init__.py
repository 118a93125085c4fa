"""Bitfinex v2 REST (``GET /v2/...`` public, ``POST /v2/auth/r|w/...`` signed).

Signing (docs/exchanges.md §6): the JSON body is sent as prepared (``{}`` when empty) and signed as::

    bfx-signature = hex(HMAC-SHA384(secret, "/api" + path + nonce + body))

with ``bfx-nonce``, ``bfx-apikey`` and ``Content-Type: application/json`` headers built from
scratch. The URL path is ``/v2/auth/...``; the signed path is ``/api/v2/auth/...``.

Nonces: strictly increasing per API key, and the scale is fixed per key. ``nonce_unit``
defaults to ``"us"`` (the docs' ``Date.now() * 1000``): a microsecond nonce is larger than any
millisecond one, so a key that ccxt (ms) used before keeps working. An account option may pick
``"ms"`` through ``dataclasses.replace``. The nonce may never go down: once a key has signed
with µs nonces Bitfinex refuses every ms nonce ("nonce: small", 10114), so changing the scale
of a key that has signed before must be refused (the state store enforces that).

Orders carry a signed ``amount`` (negative = sell): the intent's quantity is its absolute value
and the side comes from the sign. ``cid`` is an integer below 2**45, unique per UTC day.
Bitfinex has no separate testnet: paper trading is a sub-account on the same host.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest, EndpointForbidden
from proxy.exchanges.base import (
    Catalogue,
    Credentials,
    Environment,
    NonceUnit,
    dump_json,
    encode_pairs,
    endpoint,
    parse_json_object,
    parse_pairs,
    reject_unused_body,
)
from proxy.exchanges.base import (
    require_secret as _require,
)
from proxy.exchanges.bitfinex.capabilities import (
    CAPABILITIES,
    CLIENT_ORDER_ID_RULES,
    LOOKUP_LIMIT,
    MAX_CID,
    SYMBOL,
    lookup_result,
)
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import (
    Lookup,
    batch_inbound_with,
    inbound_with,
    member_appended,
)
from proxy.model.decimals import parse_decimal
from proxy.model.request import Category, Endpoint, Inbound, Instrument, Intent, Outbound, Prepared, Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey

P, R, T, C = Category.PUBLIC, Category.READ, Category.TRADE, Category.CANCEL
W, X, A = Category.WITHDRAW, Category.TRANSFER, Category.ADMIN

_AUTH = "/v2/auth/"
CATALOGUE = Catalogue([
    endpoint("GET", "/v2/platform/status", P),
    endpoint("GET", "/v2/tickers", P),
    *(endpoint("POST", f"{_AUTH}r/{p}", R) for p in (
        "wallets", "orders", "orders/hist", "trades/hist", "positions", "info/user",
        "permissions", "info/margin/base", "summary",
    )),
    endpoint("POST", f"{_AUTH}w/order/submit", T, name="submit"),
    endpoint("POST", f"{_AUTH}w/order/multi", T, name="multi", batch=True),
    endpoint("POST", f"{_AUTH}w/order/cancel", C, name="cancel"),
    endpoint("POST", f"{_AUTH}w/order/cancel/multi", C, name="cancel_multi", batch=True),
    # never: catalogued so that the refusal names the category (unlisted paths are refused too)
    endpoint("POST", f"{_AUTH}w/withdraw", W),
    endpoint("POST", f"{_AUTH}w/ext/wallets/withdrawals/request", W),
    endpoint("POST", f"{_AUTH}w/transfer", X),
    endpoint("POST", f"{_AUTH}w/deposit/address", A),
    endpoint("POST", f"{_AUTH}w/deposit/invoice", A),
    # an auth token would let its holder act around the proxy's policy
    endpoint("POST", f"{_AUTH}w/token", A),
    endpoint("POST", f"{_AUTH}w/settings/set", A),
    endpoint("POST", f"{_AUTH}w/settings/del", A),
    endpoint("POST", "/v1/withdraw", W),
    endpoint("POST", "/v1/transfer", X),
])

_CONF = re.compile(r"pub:[a-z]+(?::[a-z]+)*(?:,pub:[a-z]+(?::[a-z]+)*)*")
#: Paths whose parameter segment holds ':' or ',' (Catalogue segments cannot).
_TEMPLATES: tuple[tuple[re.Pattern[str], Endpoint], ...] = (
    (re.compile(r"/v2/conf/([^/]+)"), endpoint("GET", "/v2/conf/{config}", P)),
    (re.compile(r"/v2/ticker/([^/]+)"), endpoint("GET", "/v2/ticker/{symbol}", P)),
    (re.compile(r"/v2/trades/([^/]+)/hist"), endpoint("GET", "/v2/trades/{symbol}/hist", P)),
    (re.compile(r"/v2/book/([^/]+)/(?:P0|P1|P2|P3|P4|R0)"),
     endpoint("GET", "/v2/book/{symbol}/{precision}", P)),
    (re.compile(r"/v2/auth/r/orders/([^/]+)"), endpoint("POST", f"{_AUTH}r/orders/{{symbol}}", R)),
    (re.compile(r"/v2/auth/r/orders/([^/]+)/hist"),
     endpoint("POST", f"{_AUTH}r/orders/{{symbol}}/hist", R)),
    (re.compile(r"/v2/auth/r/trades/([^/]+)/hist"),
     endpoint("POST", f"{_AUTH}r/trades/{{symbol}}/hist", R)),
)

JSON = "application/json"
MAX_OPS = 75
_ORDER_TYPES = frozenset({
    f"{prefix}{kind}" for prefix in ("EXCHANGE ", "")
    for kind in ("LIMIT", "MARKET", "STOP", "STOP LIMIT", "FOK", "IOC")
})
_FLAGS = {64: "hidden", 512: "close", 1024: "reduce_only", 4096: "post_only", 16384: "oco",
          524288: "no_var_rates"}
_ORDER_FIELDS = frozenset({
    "type", "symbol", "amount", "price", "lev", "price_aux_limit", "price_oco_stop", "gid",
    "cid", "flags", "tif", "meta",
})
_META_FIELDS = frozenset({"aff_code", "make_visible", "protect_selfmatch"})
_DATE = re.compile(r"20[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])")
_TIF = re.compile(r"20[0-9]{2}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


@dataclass(frozen=True)
class Bitfinex:
    """Bitfinex v2. ``nonce_unit`` ("us" by default, or "ms") is fixed per key for life."""

    name: str = "bitfinex"
    nonce_unit: NonceUnit | None = "us"

    @property
    def capabilities(self) -> Capabilities:
        """What generic code may ask of Bitfinex: the "capabilities" section below."""
        return CAPABILITIES

    def __post_init__(self) -> None:
        if self.nonce_unit not in ("ms", "us"):
            raise ValueError('nonce_unit: Bitfinex needs "ms" or "us"')

    def base_url(self, environment: Environment) -> str:
        if environment != "live":
            # Paper trading is a sub-account with its own keys on the live host: no host, header
            # or flag tells its requests apart, so "testnet" could only ever trade live.
            raise ValueError("Bitfinex has no testnet (paper trading is a sub-account on the live "
                             "host); use environment = \"live\" with the paper sub-account's keys")
        return "https://api.bitfinex.com"

    def load_credentials(self, fields: Mapping[str, Secret], version: int) -> Credentials:
        api_key, secret = _require(fields, "api_key"), _require(fields, "api_secret")
        return Credentials(api_key=api_key.reveal(), key=HmacKey(secret), version=version)

    def prepare(self, inbound: Inbound) -> Prepared:
        ep, symbol = lookup(inbound.method, inbound.raw_path)
        path = inbound.raw_path
        if ep.category is Category.PUBLIC:
            reject_unused_body(inbound)
            query = encode_pairs(parse_pairs(inbound.raw_query, "query"))
            return Prepared(inbound.method, path, query, b"", None, ep)
        if inbound.raw_query:
            raise BadRequest("query: Bitfinex authenticated endpoints take a JSON body only")
        if inbound.body:
            ctype = (inbound.header("content-type") or "").split(";")[0].strip().lower()
            if ctype != JSON:
                raise BadRequest(f"body: Content-Type must be {JSON}")
        obj = parse_json_object(inbound.body) if inbound.body else {}
        intents = _intents(ep, symbol, obj)
        return Prepared(inbound.method, path, "", dump_json(obj).encode(), JSON, ep, intents)

    def with_client_order_id(self, prepared: Prepared, coid: str) -> Prepared:
        """``prepared`` with the integer ``cid`` added (scoped by Bitfinex to the UTC day):
        appended to the canonical JSON of a ``submit`` without parsing the order again
        (``prepare`` keeps the members in order and reads ``cid`` from nowhere else), else
        by a re-parse."""
        field = CLIENT_ORDER_ID_RULES.field
        plain = prepared.endpoint.name == "submit" and coid.isascii() and coid.isdigit()
        in_range = plain and 0 < int(coid) < MAX_CID
        fast = member_appended(prepared, field, coid, as_int=True) if in_range else None
        return fast or self.prepare(inbound_with(prepared, field, int(coid)))

    def order_lookups(self, prepared: Prepared) -> tuple[Prepared, ...]:
        """The symbol's active orders, then its recent closed ones (``/hist``, up to
        LOOKUP_LIMIT). Filtering by ``cid`` needs the order's UTC ``cid_date``, which a retry
        cannot know for sure, so the proxy reads the lists and finds the order itself
        (:meth:`lookup_result_for`). Active first: an order that closes between the two reads
        is then still seen in the second."""
        symbol = prepared.intents[0].symbol
        assert symbol is not None
        active = Inbound("POST", f"{_AUTH}r/orders/{symbol}", b"", (("content-type", JSON),), b"{}")
        closed = Inbound("POST", f"{_AUTH}r/orders/{symbol}/hist", b"", (("content-type", JSON),),
                         dump_json({"limit": LOOKUP_LIMIT}).encode())
        return (self.prepare(active), self.prepare(closed))

    def lookup_result(self, status: int, body: bytes) -> Lookup:
        """A list of orders proves nothing without the order it is searched for: see
        :meth:`lookup_result_for`."""
        return Lookup.UNKNOWN

    def lookup_result_for(self, order: Prepared, status: int, body: bytes) -> tuple[Lookup, bytes]:
        """Found: an order array with the same ``cid``, symbol and signed original amount
        (a ``cid`` is unique per UTC day only, so an older order reusing it must not count);
        the bot sees that array alone, never the account's other orders. Absent: a complete
        list without it (a list of LOOKUP_LIMIT entries may be cut short: unknown)."""
        return lookup_result(order.intents[0], status, body)

    def with_batch_client_order_ids(self, prepared: Prepared, ids: Sequence[str | None]) -> Prepared:
        """``prepared`` (a batch placement) with ``ids[i]`` added to order ``i`` that has none."""
        values = [None if c is None else int(c) for c in ids]
        field = CLIENT_ORDER_ID_RULES.field
        return self.prepare(batch_inbound_with(prepared, "ops", field, values, item_index=1))

    def sign(self, prepared: Prepared, creds: Credentials, stamp: Stamp, host: str) -> Outbound:
        target = f"{prepared.path}?{prepared.query}" if prepared.query else prepared.path
        if prepared.category is Category.PUBLIC:
            return Outbound(prepared.method, target, (), b"", stamp)
        if stamp.nonce <= 0:
            raise ValueError("Bitfinex needs a strictly increasing positive nonce in Stamp.nonce")
        nonce = str(stamp.nonce)
        headers = (
            ("Content-Type", JSON),
            ("bfx-nonce", nonce),
            ("bfx-apikey", creds.api_key),
            ("bfx-signature", signature(creds, prepared.path, nonce, prepared.body)),
        )
        return Outbound(prepared.method, target, headers, prepared.body, stamp)


def signature(creds: Credentials, path: str, nonce: str, body: bytes) -> str:
    """``bfx-signature`` for ``body`` sent to ``path`` (``/v2/auth/...``) with ``nonce``."""
    key = creds.key
    if not isinstance(key, HmacKey):
        raise TypeError("Bitfinex signs with HMAC keys only")
    return key.hexdigest(f"/api{path}{nonce}".encode() + body, "sha384")


def lookup(method: str, raw_path: str) -> tuple[Endpoint, str | None]:
    """The catalogued endpoint and, for symbol paths, the symbol; Catalogue's rules otherwise."""
    exact = {(e.method, e.path) for e in CATALOGUE.endpoints}
    if (method, raw_path) not in exact and "/../" not in raw_path and "//" not in raw_path:
        for pattern, ep in _TEMPLATES:
            match = pattern.fullmatch(raw_path)
            if match is None:
                continue
            if ep.method != method:
                raise EndpointForbidden(f"{method} {raw_path} is not an endpoint this proxy allows")
            value = match.group(1)
            if ep.path == "/v2/conf/{config}":
                if not _CONF.fullmatch(value):
                    raise BadRequest("config: send pub:... labels separated by ','")
                return ep, None
            if not SYMBOL.fullmatch(value):
                raise BadRequest("symbol: use Bitfinex's trading symbol exactly, e.g. tBTCUSD")
            return ep, value
    return CATALOGUE.lookup(method, raw_path), None


# ---------------------------------------------------------------- intents

def _intents(ep: Endpoint, symbol: str | None, obj: dict[str, Any]) -> tuple[Intent, ...]:
    if ep.name == "submit":
        return (_order(obj),)
    if ep.name == "multi":
        return _multi(obj)
    if ep.name == "cancel":
        return (_cancel(obj),)
    if ep.name == "cancel_multi":
        _cancel_multi(obj)
        return (Intent(),)
    return (Intent(symbol=symbol),)


def _multi(obj: dict[str, Any]) -> tuple[Intent, ...]:
    ops = obj.get("ops")
    if set(obj) != {"ops"} or not isinstance(ops, list) or not 1 <= len(ops) <= MAX_OPS:
        raise BadRequest(f'body: send {{"ops": [["on", {{...}}], ...]}} with 1 to {MAX_OPS} ops')
    intents = []
    for i, op in enumerate(ops):
        if not (isinstance(op, list) and len(op) == 2 and isinstance(op[1], dict)):
            raise BadRequest(f"ops[{i}]: each op is [name, object]")
        if op[0] != "on":
            raise BadRequest(
                f"ops[{i}]: only 'on' (new order) is accepted in order/multi; "
                "send cancels to /v2/auth/w/order/cancel or cancel/multi"
            )
        intents.append(_order(op[1]))
    cids = [i.client_order_id for i in intents if i.client_order_id]
    if len(cids) != len(set(cids)):
        raise BadRequest("cid: each order in a batch needs its own client order id")
    return tuple(intents)


def _order(obj: Mapping[str, Any]) -> Intent:
    unknown = sorted(set(obj) - _ORDER_FIELDS)
    if unknown:
        raise BadRequest(f"{unknown[0]!r} is not an order field this proxy understands")
    otype, symbol = obj.get("type"), obj.get("symbol")
    if (isinstance(otype, str) and otype.endswith("TRAILING STOP")) or "price_trailing" in obj:
        raise BadRequest("TRAILING STOP: the exchange moves a trailing stop's price with the "
                         "market, which the policy cannot check; send a STOP or STOP LIMIT")
    if otype not in _ORDER_TYPES:
        raise BadRequest("type: use a Bitfinex order type such as 'EXCHANGE LIMIT'")
    if not isinstance(symbol, str) or not SYMBOL.fullmatch(symbol):
        raise BadRequest("symbol: use Bitfinex's trading symbol exactly, e.g. tBTCUSD")
    amount = parse_decimal(_text(obj, "amount"), "amount", allow_negative=True)
    if amount == 0:
        raise BadRequest("amount: must not be zero (positive buys, negative sells)")
    flags = _flags(obj.get("flags", 0))
    kind = otype.removeprefix("EXCHANGE ")
    prices = {k: parse_decimal(_text(obj, k), k) for k in (
        "price", "price_aux_limit", "price_oco_stop") if k in obj}
    need = {
        "LIMIT": {"price"}, "FOK": {"price"}, "IOC": {"price"}, "MARKET": set(),
        "STOP": {"price"}, "STOP LIMIT": {"price", "price_aux_limit"},
    }[kind] | ({"price_oco_stop"} if "oco" in flags else set())
    if set(prices) != need:
        missing, extra = sorted(need - set(prices)), sorted(set(prices) - need)
        raise BadRequest(
            f"{otype}: " + (f"{missing[0]} is required" if missing else f"{extra[0]} is not used")
        )
    for key, top in (("lev", 100), ("gid", MAX_CID)):
        if key in obj:
            _integer(obj[key], key, top)
    if "tif" in obj and not (isinstance(obj["tif"], str) and _TIF.fullmatch(obj["tif"])):
        raise BadRequest("tif: 'YYYY-MM-DD HH:MM:SS' (UTC)")
    if "meta" in obj:
        _meta(obj["meta"])
    cid = _integer(obj["cid"], "cid", MAX_CID) if "cid" in obj else None
    tif = _effective_tif(kind, flags, "tif" in obj)
    limit = prices.get("price_aux_limit") if kind == "STOP LIMIT" else (
        prices.get("price") if kind in ("LIMIT", "FOK", "IOC") else None)
    side = "buy" if amount > 0 else "sell"
    triggers = (prices["price"],) if kind in ("STOP", "STOP LIMIT") else ()
    legs: tuple[Intent, ...] = ()
    if "oco" in flags:
        # BFX-DOC "Submit order" flags: OCO (16384) "places a stop order at price_oco_stop
        # alongside the order": a second order of the same side and amount, a STOP.
        stop = "EXCHANGE STOP" if otype.startswith("EXCHANGE ") else "STOP"
        legs = (Intent(symbol=symbol, side=side, order_type=stop.lower(), quantity=abs(amount),
                       prices=(prices["price_oco_stop"],)),)
    return Intent(
        symbol=symbol, side=side, order_type=otype.lower(), time_in_force=tif,
        quantity=abs(amount), price=limit, client_order_id=None if cid is None else str(cid),
        prices=triggers, legs=legs, **_instrument_fields(symbol),
    )


def _effective_tif(kind: str, flags: Collection[str], until: bool) -> str | None:
    """No time-in-force field: FOK and IOC are order types, post-only a flag, a ``tif`` date
    makes a limit order good till then, else it rests until cancelled; market and stop: none."""
    if kind in ("FOK", "IOC"):
        return kind
    if "post_only" in flags:
        return "PO"
    return ("GTD" if until else "GTC") if kind in ("LIMIT", "STOP LIMIT") else None


def _instrument_fields(symbol: str) -> dict[str, Any]:
    """A trading pair (tBTCUSD, tTESTBTC:TESTUSD) counts base units; a derivative (tBTCF0:USTF0)
    has no instruments reader here, so notional rules refuse it."""
    derivative = "F0" in symbol
    return {"market": "derivatives"} if derivative else {"instrument": Instrument(symbol, "spot")}


def _cancel(obj: Mapping[str, Any]) -> Intent:
    if set(obj) == {"id"}:
        _integer(obj["id"], "id", 2**63)
        return Intent()
    if set(obj) == {"cid", "cid_date"}:
        cid = _integer(obj["cid"], "cid", MAX_CID)
        if not (isinstance(obj["cid_date"], str) and _DATE.fullmatch(obj["cid_date"])):
            raise BadRequest("cid_date: the order's creation date, YYYY-MM-DD (UTC)")
        return Intent(client_order_id=str(cid))
    raise BadRequest('body: send {"id": N} or {"cid": N, "cid_date": "YYYY-MM-DD"}')


def _cancel_multi(obj: Mapping[str, Any]) -> None:
    if len(obj) != 1:
        raise BadRequest("body: send exactly one of id, gid, cid or all")
    (key, value), = obj.items()
    if key == "all":
        if value != 1 or isinstance(value, bool):
            raise BadRequest('all: send {"all": 1}')
        return
    if key not in ("id", "gid", "cid") or not isinstance(value, list) or not value:
        raise BadRequest("body: send a non-empty list in id, gid or cid")
    for item in value:
        if key == "cid":
            if not (isinstance(item, list) and len(item) == 2):
                raise BadRequest('cid: a list of [cid, "YYYY-MM-DD"] pairs')
            _cancel({"cid": item[0], "cid_date": item[1]})
        else:
            _integer(item, key, 2**63)


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{key}: send a decimal string, e.g. \"0.5\" (or \"-0.5\" to sell)")
    return value


def _integer(value: Any, key: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < top:
        raise BadRequest(f"{key}: a positive JSON integer below {top}")
    return value


def _flags(value: Any) -> set[str]:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest("flags: a non-negative JSON integer")
    known = sum(_FLAGS)
    if value & ~known:
        raise BadRequest(f"flags: only the bits {sorted(_FLAGS)} are accepted")
    return {name for bit, name in _FLAGS.items() if value & bit}


def _meta(value: Any) -> None:
    if not isinstance(value, dict) or set(value) - _META_FIELDS:
        raise BadRequest(f"meta: an object with only {', '.join(sorted(_META_FIELDS))}")
    if any(not isinstance(v, str | int) or isinstance(v, bool) for v in value.values()):
        raise BadRequest("meta: values must be strings or integers")


EXCHANGE = Bitfinex()
