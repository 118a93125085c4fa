"""Kraken spot REST (``/0/public/*`` unsigned, ``/0/private/*`` signed).

Signing (docs/exchanges.md §7): the nonce goes INTO the body, first, and the signature covers the body
exactly as sent::

    API-Sign = base64(HMAC-SHA512(base64decode(secret), path + SHA256(nonce + body)))

Form bodies become ``nonce=N&<canonical pairs>``; JSON bodies (ccxt's choice for
``AddOrderBatch``/``CancelOrderBatch``) become ``{"nonce":"N",<canonical members>}``. prepare()
removes any ``nonce``/``otp`` the bot sent and re-encodes what is left, so what policy sees is
what is signed.

Nonces: strictly increasing per API key. ``nonce_unit`` defaults to ``"us"``: a microsecond
nonce is larger than any millisecond nonce, so a key that ccxt (ms) used before keeps working.
The scale may never go down: once a key has signed with µs nonces, Kraken refuses every ms
nonce ("EAPI:Invalid nonce"), so the state store must refuse changing the unit of a key that
has signed before. Keys with a 2FA password (``otp``) are not supported.

Kraken spot has no testnet; ``base_url("testnet")`` refuses rather than guessing.
Pairs are taken exactly as sent: ``XBTUSD`` and ``XXBTZUSD`` are different strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from proxy.errors import BadRequest
from proxy.exchanges.base import (
    Catalogue,
    Credentials,
    Environment,
    NonceUnit,
    Pairs,
    drop_keys,
    dump_json,
    endpoint,
    parse_json_object,
    parse_pairs,
    reject_unused_body,
)
from proxy.exchanges.base import (
    require_secret as _require,
)
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import (
    Lookup,
    inbound_with,
    lookup_inbound,
    member_appended,
    pair_appended,
)
from proxy.exchanges.kraken.capabilities import CAPABILITIES, CLIENT_ORDER_ID_RULES, USER_AGENT, lookup_result
from proxy.model.decimals import parse_decimal, parse_integer
from proxy.model.request import Action, Category, Inbound, Instrument, Intent, Outbound, Prepared, Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey

P, R, T, C = Category.PUBLIC, Category.READ, Category.TRADE, Category.CANCEL
W, X, A = Category.WITHDRAW, Category.TRANSFER, Category.ADMIN

_PRIVATE = "/0/private/"
CATALOGUE = Catalogue([
    *(endpoint("GET", f"/0/public/{p}", P) for p in (
        "Time", "SystemStatus", "Assets", "AssetPairs", "Ticker", "OHLC", "Depth", "Trades",
        "Spread",
    )),
    *(endpoint("POST", f"{_PRIVATE}{p}", R) for p in (
        "Balance", "BalanceEx", "TradeBalance", "OpenOrders", "ClosedOrders", "QueryOrders",
        "TradesHistory", "QueryTrades", "OpenPositions", "Ledgers", "QueryLedgers", "TradeVolume",
        "OrderAmends",
    )),
    endpoint("POST", f"{_PRIVATE}AddOrder", T, name="AddOrder"),
    endpoint("POST", f"{_PRIVATE}AddOrderBatch", T, name="AddOrderBatch", batch=True),
    endpoint("POST", f"{_PRIVATE}CancelOrder", C, name="CancelOrder"),
    endpoint("POST", f"{_PRIVATE}CancelOrderBatch", C, name="CancelOrderBatch", batch=True),
    endpoint("POST", f"{_PRIVATE}CancelAll", C, name="CancelAll"),
    endpoint("POST", f"{_PRIVATE}CancelAllOrdersAfter", C, name="CancelAllOrdersAfter"),
    # never: catalogued so that the refusal names the category (unlisted paths are refused too)
    *(endpoint("POST", f"{_PRIVATE}{p}", W) for p in (
        "Withdraw", "WithdrawCancel", "WithdrawInfo", "WithdrawMethods", "WithdrawStatus",
    )),
    endpoint("POST", f"{_PRIVATE}WithdrawAddresses", A),
    endpoint("POST", f"{_PRIVATE}WalletTransfer", X),
    endpoint("POST", f"{_PRIVATE}AccountTransfer", X),
    endpoint("POST", f"{_PRIVATE}CreateSubaccount", A),
    endpoint("POST", f"{_PRIVATE}GetApiKeyInfo", A),
    # a real WebSocket token would let its holder trade around the proxy's policy: a bot's
    # request is answered by the proxy with a placeholder (proxy.exchanges.kraken.stream)
    endpoint("POST", f"{_PRIVATE}GetWebSocketsToken", R, Action.STREAM_TOKEN),
])

#: Authentication a bot (or ccxt) may have put in the body; the proxy adds its own nonce.
AUTH_PARAMS = ("nonce", "otp")
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_BATCH = 15

_PAIR = re.compile(r"[A-Z0-9]{2,24}")
_CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9_\-]{1,36}")
_USERREF = re.compile(r"-?(?:0|[1-9][0-9]{0,9})")
_SIDES = frozenset({"buy", "sell"})
_OFLAGS = frozenset({"post", "fcib", "fciq", "nompp", "viqc"})
_TIFS = frozenset({"GTC", "IOC", "GTD"})
_PRICED = frozenset({"limit", "iceberg"})
_TRIGGERED = frozenset({"stop-loss", "take-profit"})
_TRIGGERED_LIMIT = frozenset({"stop-loss-limit", "take-profit-limit"})
_ORDER_FIELDS = frozenset({
    "ordertype", "type", "volume", "displayvol", "price", "price2", "trigger", "leverage",
    "reduce_only", "stptype", "oflags", "timeinforce", "starttm", "expiretm", "userref",
    "cl_ord_id",
})
_ADD_ORDER_FIELDS = _ORDER_FIELDS | {"pair", "deadline", "validate"}
_BATCH_FIELDS = frozenset({"orders", "pair", "deadline", "validate"})


def _encode(pairs: Pairs) -> str:
    """Form encoding as ccxt's ``urlencode_nested``: unreserved and ``[]`` kept, rest %XX."""
    return "&".join(f"{quote(k, safe='-_.~[]')}={quote(v, safe='-_.~[]')}" for k, v in pairs)


@dataclass(frozen=True)
class Kraken:
    """Kraken spot. ``nonce_unit`` is the scale of Stamp.nonce; see the module docstring."""

    name: str = "kraken"
    nonce_unit: NonceUnit | None = "us"

    @property
    def capabilities(self) -> Capabilities:
        """What generic code may ask of Kraken: the "capabilities" section below."""
        return CAPABILITIES
    def canonical_symbol(self, symbol: str) -> str:  # policy compares symbols through this
        return canonical_pair(symbol)

    def __post_init__(self) -> None:
        if self.nonce_unit not in ("ms", "us"):
            raise ValueError('nonce_unit: Kraken needs "ms" or "us"')

    def base_url(self, environment: Environment) -> str:
        if environment == "live":
            return "https://api.kraken.com"
        raise ValueError(
            "Kraken spot has no testnet; use environment = \"live\" or point base_url at an "
            "emulator with unsafe_custom_base_url = true"
        )

    def load_credentials(self, fields: Mapping[str, Secret], version: int) -> Credentials:
        api_key, secret = _require(fields, "api_key"), _require(fields, "api_secret")
        try:
            raw = base64.b64decode(secret.reveal(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("api_secret: a Kraken private key is base64 text, as issued") from None
        if not raw:
            raise ValueError("api_secret: empty after base64 decoding")
        return Credentials(api_key=api_key.reveal(), key=HmacKey(raw), version=version)

    def prepare(self, inbound: Inbound) -> Prepared:
        ep = CATALOGUE.lookup(inbound.method, inbound.raw_path)
        if ep.category is Category.PUBLIC:
            reject_unused_body(inbound)
            query = parse_pairs(inbound.raw_query, "query")
            return Prepared(inbound.method, ep.path, _encode(query), b"", None, ep)
        if inbound.raw_query:
            raise BadRequest("query: Kraken private methods take parameters in the POST body only")
        ctype = _content_type(inbound)
        if ctype == JSON:
            obj = parse_json_object(inbound.body)
            for key in AUTH_PARAMS:
                obj.pop(key, None)
            body = dump_json(obj).encode()
            intents = _json_intents(ep.name, ep.category, obj)
        else:
            if ep.name in ("AddOrderBatch", "CancelOrderBatch"):
                raise BadRequest(f"body: send {ep.name} as application/json")
            pairs = drop_keys(parse_pairs(inbound.body, "body"), AUTH_PARAMS)
            body = _encode(pairs).encode()
            intents = _form_intents(ep.name, ep.category, dict(pairs))
        return Prepared(inbound.method, ep.path, "", body, ctype, ep, intents)

    def with_client_order_id(self, prepared: Prepared, coid: str) -> Prepared:
        """``prepared`` with ``cl_ord_id`` added; unchanged when the bot sent ``userref``
        (Kraken takes one or the other)."""
        field, body, json_body = CLIENT_ORDER_ID_RULES.field, prepared.body, prepared.content_type == JSON
        # appended without parsing the order again when ``userref`` cannot be there (``prepare``
        # keeps members and pairs in order and reads the id from nowhere else)
        if (_CLIENT_ORDER_ID.fullmatch(coid) and prepared.endpoint.name == "AddOrder"
                and (b'"userref"' not in body if json_body else b"&userref=" not in b"&" + body)):
            fast = (member_appended if json_body else pair_appended)(prepared, field, coid)
            if fast is not None:
                return fast
        names = set(parse_json_object(body)) if json_body else {k for k, _ in parse_pairs(body, "body")}
        if "userref" in names:
            return prepared
        return self.prepare(inbound_with(prepared, field, coid))

    def order_lookups(self, prepared: Prepared) -> tuple[Prepared, ...]:
        """``OpenOrders`` then ``ClosedOrders`` filtered by ``cl_ord_id``."""
        coid = prepared.intents[0].client_order_id
        assert coid is not None
        json_body = prepared.content_type == JSON
        return tuple(
            self.prepare(lookup_inbound("POST", f"{_PRIVATE}{name}", [("cl_ord_id", coid)],
                                        json=json_body))
            for name in ("OpenOrders", "ClosedOrders")
        )

    def lookup_result(self, status: int, body: bytes) -> Lookup:
        """No error and the order under ``open``/``closed``: found; none there: absent."""
        return lookup_result(status, body)

    def sign(self, prepared: Prepared, creds: Credentials, stamp: Stamp, host: str) -> Outbound:
        if prepared.category is Category.PUBLIC:
            target = f"{prepared.path}?{prepared.query}" if prepared.query else prepared.path
            return Outbound("GET", target, (("User-Agent", USER_AGENT),), b"", stamp)
        if stamp.nonce <= 0:
            raise ValueError("Kraken needs a strictly increasing positive nonce in Stamp.nonce")
        nonce = str(stamp.nonce)
        body = with_nonce(prepared.body.decode(), nonce, prepared.content_type == JSON)
        headers = (
            ("API-Key", creds.api_key),
            ("API-Sign", api_sign(creds, prepared.path, nonce, body.encode())),
            ("Content-Type", prepared.content_type or FORM),
            ("User-Agent", USER_AGENT),
        )
        return Outbound("POST", prepared.path, headers, body.encode(), stamp)


def with_nonce(body: str, nonce: str, json_body: bool) -> str:
    """The body with ``nonce`` first, in the same encoding as the rest of it."""
    if json_body:
        rest = body[1:] if body not in ("", "{}") else "}"
        return '{"nonce":"' + nonce + '"' + ("," if rest != "}" else "") + rest
    return f"nonce={nonce}&{body}" if body else f"nonce={nonce}"


def api_sign(creds: Credentials, path: str, nonce: str, body: bytes) -> str:
    """``API-Sign`` for ``body`` (which already holds ``nonce``) sent to ``path``."""
    key = creds.key
    if not isinstance(key, HmacKey):
        raise TypeError("Kraken signs with HMAC keys only")
    inner = hashlib.sha256(nonce.encode() + body).digest()
    return base64.b64encode(key.digest(path.encode() + inner, "sha512")).decode()


def _content_type(inbound: Inbound) -> str:
    if not inbound.body:
        return FORM
    ctype = (inbound.header("content-type") or "").split(";")[0].strip().lower()
    if ctype not in (FORM, JSON):
        raise BadRequest(f"body: Content-Type must be {FORM} or {JSON}")
    return ctype


# ---------------------------------------------------------------- intents

def _scalar(value: Any, key: str) -> str:
    """A JSON scalar as the text Kraken reads; nested values are refused."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    raise BadRequest(f"{key}: must be a string or number, not {type(value).__name__}")


def _form_intents(name: str, category: Category, p: Mapping[str, str]) -> tuple[Intent, ...]:
    if name == "AddOrder":
        return (_order(p, p.get("pair"), _ADD_ORDER_FIELDS),)
    return _other_intents(name, category, p)


def _json_intents(name: str, category: Category, obj: dict[str, Any]) -> tuple[Intent, ...]:
    if name == "AddOrderBatch":
        unknown = sorted(set(obj) - _BATCH_FIELDS)
        if unknown:
            raise BadRequest(f"{unknown[0]!r} is not an AddOrderBatch field this proxy understands")
        orders = obj.get("orders")
        if not isinstance(orders, list) or not 1 <= len(orders) <= MAX_BATCH:
            raise BadRequest(f"orders: send a list of 1 to {MAX_BATCH} orders")
        pair = _scalar(obj.get("pair"), "pair") if "pair" in obj else None
        intents = []
        for i, order in enumerate(orders):
            if not isinstance(order, dict):
                raise BadRequest(f"orders[{i}]: each order must be a JSON object")
            fields = {k: _scalar(v, f"orders[{i}].{k}") for k, v in order.items()}
            intents.append(_order(fields, pair, _ORDER_FIELDS))
        ids = [i.client_order_id for i in intents if i.client_order_id]
        if len(ids) != len(set(ids)):
            raise BadRequest("cl_ord_id: each order in a batch needs its own client order id")
        return tuple(intents)
    if name == "CancelOrderBatch":
        for key in ("orders", "cl_ord_ids"):
            value = obj.get(key)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str | int) for v in value)
            ):
                raise BadRequest(f"{key}: send a list of order ids")
        return (Intent(),)
    fields = {k: _scalar(v, k) for k, v in obj.items()}
    if name == "AddOrder":
        return (_order(fields, fields.get("pair"), _ADD_ORDER_FIELDS),)
    return _other_intents(name, category, fields)


def _other_intents(name: str, category: Category, p: Mapping[str, str]) -> tuple[Intent, ...]:
    coid = p.get("cl_ord_id")
    if coid is not None and not _CLIENT_ORDER_ID.fullmatch(coid):
        raise BadRequest("cl_ord_id: 1-36 characters from A-Z, a-z, 0-9, '-' and '_'")
    if name == "CancelOrder" and ("txid" in p) == ("cl_ord_id" in p):
        raise BadRequest("CancelOrder: send exactly one of txid or cl_ord_id")
    if name == "CancelAllOrdersAfter":
        parse_integer(p.get("timeout", ""), "timeout")
    if category in (Category.READ, Category.CANCEL):
        return (Intent(symbol=p.get("pair"), client_order_id=coid),)
    return ()


def _order(p: Mapping[str, str], pair: str | None, allowed: frozenset[str]) -> Intent:
    unknown = sorted(set(p) - allowed)
    if unknown:
        close = unknown[0].startswith("close")
        hint = " (conditional close orders are not supported)" if close else ""
        raise BadRequest(f"{unknown[0]!r} is not an order parameter this proxy understands{hint}")
    if pair is None or not _PAIR.fullmatch(pair):
        raise BadRequest("pair: required; use Kraken's pair name exactly, e.g. XBTUSD or XXBTZUSD")
    side, otype = p.get("type"), p.get("ordertype")
    if side not in _SIDES:
        raise BadRequest("type: use buy or sell")
    if otype is None:
        raise BadRequest("ordertype: required")
    flags = _oflags(p.get("oflags"))
    volume = parse_decimal(p.get("volume", ""), "volume")
    if volume <= 0:
        raise BadRequest("volume: must be more than zero")
    price = _price(p, otype)
    if "displayvol" in p:
        parse_decimal(p["displayvol"], "displayvol")
    tif = p.get("timeinforce")
    if tif is not None and tif not in _TIFS:
        raise BadRequest("timeinforce: use GTC, IOC or GTD")
    if "userref" in p and not _USERREF.fullmatch(p["userref"]):
        raise BadRequest("userref: a 32-bit integer")
    if "userref" in p and not -(2**31) <= int(p["userref"]) < 2**31:
        raise BadRequest("userref: a 32-bit integer")
    for key in ("starttm", "expiretm"):
        if key in p and not re.fullmatch(r"\+?[0-9]{1,12}(\.[0-9]{1,6})?", p[key]):
            raise BadRequest(f"{key}: a unix time in seconds, or +N for N seconds from now")
    coid = p.get("cl_ord_id")
    if coid is not None and not _CLIENT_ORDER_ID.fullmatch(coid):
        raise BadRequest("cl_ord_id: 1-36 characters from A-Z, a-z, 0-9, '-' and '_'")
    quote_sized = "viqc" in flags
    if quote_sized and otype != "market":
        raise BadRequest("oflags=viqc (volume in quote currency) is only for market orders")
    trigger = _trigger(p, otype)
    return Intent(
        symbol=pair, side=side, order_type=otype,
        time_in_force=tif if tif is not None else "GTC",  # KRK-DOC AddOrder: GTC is the default
        quantity=None if quote_sized else volume, quote_quantity=volume if quote_sized else None,
        price=price, client_order_id=coid, instrument=Instrument(pair, "spot"),
        prices=(trigger,) if trigger is not None else (),
    )


def _trigger(p: Mapping[str, str], otype: str) -> Decimal | None:
    """A stop-loss or take-profit order's trigger (``price``; a *-limit's limit is ``price2``)."""
    triggered = otype in _TRIGGERED or otype in _TRIGGERED_LIMIT
    return parse_decimal(p["price"], "price") if triggered else None


#: KRK-DOC Assets: legacy asset codes and their altname spellings (XXBTZUSD is the pair id of
#: XBTUSD); BTC and DOGE are accepted spellings of XBT and XDG.
_LEGACY_ASSETS: Mapping[str, str] = {k: k[1:] for k in (
    "XXBT", "XETH", "XLTC", "XXRP", "XXLM", "XXMR", "XETC", "XZEC", "XREP", "XMLN", "XXDG",
    "ZUSD", "ZEUR", "ZGBP", "ZCAD", "ZJPY")}
_ASSET_ALIASES = (("BTC", "XBT"), ("DOGE", "XDG"))


def canonical_pair(pair: str) -> str:
    """A pair as its altname (XXBTZUSD, BTCUSD -> XBTUSD), so no spelling escapes a cap."""
    pair = pair.upper()
    if len(pair) == 8 and pair[:4] in _LEGACY_ASSETS and pair[4:] in _LEGACY_ASSETS:
        return _LEGACY_ASSETS[pair[:4]] + _LEGACY_ASSETS[pair[4:]]
    for alias, code in _ASSET_ALIASES:
        if pair.startswith(alias):
            pair = code + pair[len(alias):]
        if pair.endswith(alias) and len(pair) > len(alias):
            pair = pair[: -len(alias)] + code
    return pair


def _oflags(text: str | None) -> list[str]:
    if text is None:
        return []
    flags = text.split(",")
    if any(f not in _OFLAGS for f in flags) or len(set(flags)) != len(flags):
        raise BadRequest(f"oflags: a comma-separated set of {', '.join(sorted(_OFLAGS))}")
    return flags


def _price(p: Mapping[str, str], otype: str) -> Decimal | None:
    """The limit price policy should see; trigger prices are checked but are not it."""
    relative = "relative or percentage prices are not accepted; send an absolute price"
    for key in ("price", "price2"):
        text = p.get(key)
        if text is not None and (text[:1] in ("+", "-", "#") or text.endswith("%")):
            raise BadRequest(f"{key}: {relative}")
    price = parse_decimal(p["price"], "price") if "price" in p else None
    price2 = parse_decimal(p["price2"], "price2") if "price2" in p else None
    if otype == "market":
        if price is not None or price2 is not None:
            raise BadRequest("price: not used by market orders; omit it")
        return None
    if otype in _PRICED or otype in _TRIGGERED:
        if price is None:
            raise BadRequest(f"price: required for a {otype} order")
        if price2 is not None:
            raise BadRequest(f"price2: not used by {otype} orders")
        return price if otype in _PRICED else None
    if otype in _TRIGGERED_LIMIT:
        if price is None or price2 is None:
            raise BadRequest(f"price (trigger) and price2 (limit) are required for {otype}")
        return price2
    raise BadRequest(
        "ordertype: use market, limit, iceberg, stop-loss, take-profit, stop-loss-limit or "
        "take-profit-limit (trailing and settle-position orders are not supported)"
    )


EXCHANGE = Kraken()
