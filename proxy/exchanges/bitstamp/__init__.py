"""Bitstamp HTTP API v2 with the v2 ``X-Auth`` header authentication (docs/exchanges.md §5a).

String to sign: ``"BITSTAMP " + api_key + METHOD + host + path + query + content_type + nonce
+ timestamp + "v2" + body``, plain concatenation; ``host`` is the netloc actually sent to
(lower case, port included) and ``content_type`` is left out when the body is empty, in which
case no Content-Type header is sent either (an empty body *with* a Content-Type is refused by
Bitstamp with API0020). The signature is lower-case hex HMAC-SHA256. The nonce is the Stamp's
single-use UUID4 (36 lower-case characters, unique within 150 s), so requests need no ordering.

Private endpoints are POSTs with a form body and no query string. Paths end in ``/`` and embed
the currency pair (``/api/v2/buy/btcusd/``); the catalogue holds them without the trailing
slash because the shared path check refuses empty segments. Legacy form auth (``key``,
``signature``, ``nonce`` in the body, docs/exchanges.md §5b) does not cover the parameters and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.errors import BadRequest, EndpointForbidden
from proxy.exchanges.base import (
    Catalogue,
    Credentials,
    Environment,
    NonceUnit,
    encode_pairs,
    endpoint,
    split_query_and_body,
)
from proxy.exchanges.base import (
    require_secret as _require,
)
from proxy.exchanges.bitstamp.capabilities import CAPABILITIES, CLIENT_ORDER_ID_RULES, lookup_result
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import (
    Lookup,
    inbound_with,
    lookup_inbound,
    pair_appended,
)
from proxy.model.decimals import parse_decimal, parse_integer
from proxy.model.request import (
    Action,
    Category,
    Endpoint,
    Inbound,
    Instrument,
    Intent,
    Outbound,
    Prepared,
    Stamp,
)
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey, looks_like_pem

P, R, T, C = Category.PUBLIC, Category.READ, Category.TRADE, Category.CANCEL
W, X, A = Category.WITHDRAW, Category.TRANSFER, Category.ADMIN
V2 = "/api/v2"

CATALOGUE = Catalogue([
    # public market data (ccxt load_markets reads markets/)
    *(endpoint("GET", f"{V2}/{p}", P) for p in (
        "markets", "currencies", "trading-pairs-info", "ticker", "ticker/{pair}",
        "ticker_hour/{pair}", "order_book/{pair}", "transactions/{pair}", "ohlc/{pair}",
        "eur_usd",
    )),
    # reads
    *(endpoint("POST", f"{V2}/{p}", R) for p in (
        "account_balances", "account_balances/{currency}", "balance", "balance/{pair}",
        "user_transactions", "user_transactions/{pair}", "open_orders/all",
        "open_orders/{pair}", "order_status", "fees/trading", "fees/trading/{pair}",
        "my_trading_pairs",
    )),
    # trading: side and order type come from the path
    *(endpoint("POST", f"{V2}/{side}{kind}/{{pair}}", T, name=f"{side}{kind}".replace("/", ":"))
      for side in ("buy", "sell") for kind in ("", "/market", "/instant")),
    endpoint("POST", f"{V2}/cancel_order", C),
    endpoint("POST", f"{V2}/cancel_all_orders", C),
    endpoint("POST", f"{V2}/cancel_all_orders/{{pair}}", C),
    # a real WebSocket token is the proxy's alone: a bot's request is answered by the proxy with
    # a placeholder (proxy.exchanges.bitstamp.stream)
    endpoint("POST", f"{V2}/websockets_token", R, Action.STREAM_TOKEN),
    # never (docs/exchanges.md §5a); anything unlisted is refused too
    *(endpoint("POST", f"{V2}/{p}", W) for p in (
        "withdrawal/open", "withdrawal/cancel", "withdrawal/status", "withdrawal-requests",
        "btc_withdrawal", "eth_withdrawal", "ltc_withdrawal", "bch_withdrawal", "xrp_withdrawal",
        "ripple_withdrawal", "usdc_withdrawal", "usdt_withdrawal", "liquidation_address/new",
    )),
    endpoint("POST", f"{V2}/transfer-to-main", X),
    endpoint("POST", f"{V2}/transfer-from-main", X),
    endpoint("POST", f"{V2}/revoke_all_api_keys", A),
    endpoint("POST", f"{V2}/travel_rule/contacts", A),
    endpoint("GET", f"{V2}/travel_rule/contacts", A),
    endpoint("POST", f"{V2}/travel_rule/utxo/xpub_registrations", A),
    endpoint("GET", f"{V2}/travel_rule/utxo/xpub_registrations", A),
])

FORM = "application/x-www-form-urlencoded"
VERSION = "v2"
LEGACY_AUTH = ("key", "signature", "nonce")
_PAIR = re.compile(r"[a-z0-9]{4,20}(?:-perp)?")
_NOT_PAIRS = {"market", "instant", "all", "trading"}
_CURRENCY = re.compile(r"[a-z0-9]{2,12}")
_CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9_\-]{1,180}")
_ORDER_ID = re.compile(r"[0-9]{1,30}")
_NONCE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BOOL = {"True": True, "true": True, "1": True, "False": False, "false": False, "0": False}
_TIF_FLAGS = {"ioc_order": "ioc", "fok_order": "fok", "moc_order": "moc", "gtd_order": "gtd",
              "daily_order": "day"}
_LIMIT_FIELDS = frozenset({"amount", "price", "client_order_id", "expire_time", *_TIF_FLAGS})
_MARKET_FIELDS = frozenset({"amount", "client_order_id"})
_INSTANT_FIELDS = frozenset({"amount", "client_order_id", "amount_in_counter"})


@dataclass(frozen=True)
class Bitstamp:
    """The Bitstamp exchange (HMAC keys only; Bitstamp issues no other kind)."""

    name: str = "bitstamp"
    nonce_unit: NonceUnit | None = None

    @property
    def capabilities(self) -> Capabilities:
        """What generic code may ask of Bitstamp: the "capabilities" section below."""
        return CAPABILITIES

    def base_url(self, environment: Environment) -> str:
        if environment != "live":
            raise ValueError("Bitstamp publishes no testnet; use environment = \"live\" or a "
                             "custom base_url")
        return "https://www.bitstamp.net"

    def load_credentials(self, fields: Mapping[str, Secret], version: int) -> Credentials:
        api_key, secret = _require(fields, "api_key"), _require(fields, "api_secret")
        if looks_like_pem(secret):
            raise ValueError("api_secret: Bitstamp keys are HMAC secrets, not PEM keys")
        return Credentials(api_key=api_key.reveal(), key=HmacKey(secret), version=version)

    def prepare(self, inbound: Inbound) -> Prepared:
        ep, segments = _lookup(inbound.method, inbound.raw_path)
        query, body = split_query_and_body(inbound)
        if ep.category is Category.PUBLIC:
            if body:
                raise BadRequest("body: public GET requests take no body")
            return Prepared("GET", inbound.raw_path, encode_pairs(query), b"", None, ep)
        if query:
            raise BadRequest("query: Bitstamp takes private parameters in the form body only")
        legacy = sorted({k for k, _ in body} & set(LEGACY_AUTH))
        if legacy:
            raise BadRequest(
                f"body: {legacy[0]!r} is legacy Bitstamp form authentication, which this proxy "
                "does not support; remove key/signature/nonce (the proxy signs with X-Auth v2)"
            )
        params = dict(body)
        intents: tuple[Intent, ...] = ()
        if ep.category is Category.TRADE:
            intents = (_order_intent(ep, segments, params),)
        else:
            intents = (_other_intent(ep, segments, params),)
        encoded = encode_pairs(body).encode()
        return Prepared(
            "POST", inbound.raw_path, "", encoded, FORM if encoded else None, ep, intents,
        )

    def with_client_order_id(self, prepared: Prepared, coid: str) -> Prepared:
        """``prepared`` (an order without an id) with the client order id added: appended to
        the canonical form body without parsing the order again (``prepare`` keeps the pairs
        in order and reads the id from nowhere else), else by a re-parse."""
        field = CLIENT_ORDER_ID_RULES.field
        fast = pair_appended(prepared, field, coid) if _CLIENT_ORDER_ID.fullmatch(coid) else None
        return fast or self.prepare(inbound_with(prepared, field, coid))

    def order_lookups(self, prepared: Prepared) -> tuple[Prepared, ...]:
        """``POST /api/v2/order_status/`` with ``client_order_id`` (open and finished orders)."""
        coid = prepared.client_order_id
        assert coid is not None
        return (self.prepare(lookup_inbound("POST", f"{V2}/order_status/",
                                            [("client_order_id", coid)])),)

    def lookup_result(self, status: int, body: bytes) -> Lookup:
        """200 with the order: found; ``404.002`` "Order not found." (ccxt: OrderNotFound):
        absent; anything else proves nothing."""
        return lookup_result(status, body)

    def sign(self, prepared: Prepared, creds: Credentials, stamp: Stamp, host: str) -> Outbound:
        target = f"{prepared.path}?{prepared.query}" if prepared.query else prepared.path
        if prepared.category is Category.PUBLIC:
            return Outbound(prepared.method, target, (), prepared.body, stamp)
        if not _NONCE.fullmatch(stamp.unique):
            raise ValueError("Bitstamp needs Stamp.unique: a lower-case 36-character UUID")
        timestamp = str(stamp.now_ms)
        payload = string_to_sign(
            creds.api_key, prepared.method, host, target, prepared.content_type, stamp.unique,
            timestamp, prepared.body,
        )
        if not isinstance(creds.key, HmacKey):
            raise TypeError("Bitstamp signs with HMAC keys only")
        headers: tuple[tuple[str, str], ...] = (
            ("X-Auth", f"BITSTAMP {creds.api_key}"),
            ("X-Auth-Signature", creds.key.hexdigest(payload)),
            ("X-Auth-Nonce", stamp.unique),
            ("X-Auth-Timestamp", timestamp),
            ("X-Auth-Version", VERSION),
        )
        if prepared.body and prepared.content_type:
            headers = (*headers, ("Content-Type", prepared.content_type))
        return Outbound(prepared.method, target, headers, prepared.body, stamp)


def string_to_sign(
    api_key: str, method: str, host: str, path_and_query: str, content_type: str | None,
    nonce: str, timestamp: str, body: bytes,
) -> bytes:
    """docs/exchanges.md §5a, byte for byte; Content-Type only when there is a body."""
    ctype = (content_type or "") if body else ""
    head = (f"BITSTAMP {api_key}{method.upper()}{host.lower()}{path_and_query}"
            f"{ctype}{nonce}{timestamp}{VERSION}")
    return head.encode() + body


def _lookup(method: str, raw_path: str) -> tuple[Endpoint, list[str]]:
    """Catalogue lookup for Bitstamp's trailing-slash paths, with withdrawals named as such."""
    if not raw_path.endswith("/") or raw_path.endswith("//"):
        raise BadRequest("path: Bitstamp paths end with exactly one '/', e.g. /api/v2/balance/")
    path = raw_path[:-1]
    if path != path.lower():
        raise BadRequest("path: Bitstamp paths and pairs are lower case, e.g. /api/v2/buy/btcusd/")
    segments = path[1:].split("/")
    if any(s.endswith("_withdrawal") or s.startswith("withdrawal") for s in segments):
        raise EndpointForbidden(f"{method} {raw_path} is a withdraw endpoint; never allowed")
    ep = CATALOGUE.lookup(method, path)
    template = ep.path[1:].split("/")
    for name, value in zip(template, segments, strict=True):
        if name == "{pair}" and (not _PAIR.fullmatch(value) or value in _NOT_PAIRS):
            raise BadRequest("path: the pair must be Bitstamp's lower-case market symbol, "
                             "e.g. btcusd")
        if name == "{currency}" and not _CURRENCY.fullmatch(value):
            raise BadRequest("path: the currency must be lower case, e.g. btc")
    return ep, segments


def _flag(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name)
    if value is None:
        return False
    if value not in _BOOL:
        raise BadRequest(f"{name}: use True or False")
    return _BOOL[value]


def _client_order_id(value: str | None) -> str | None:
    if value is not None and not _CLIENT_ORDER_ID.fullmatch(value):
        raise BadRequest("client_order_id: 1-180 characters from A-Z, a-z, 0-9, '_' and '-'")
    return value


def _order_intent(ep: Endpoint, segments: list[str], params: Mapping[str, str]) -> Intent:
    side, pair = segments[2], segments[-1]
    kind = segments[3] if len(segments) == 5 else "limit"
    allowed = {"limit": _LIMIT_FIELDS, "market": _MARKET_FIELDS, "instant": _INSTANT_FIELDS}[kind]
    unknown = sorted(set(params) - allowed)
    if unknown:
        hint = " (limit_price places a second order)" if "limit_price" in unknown else ""
        raise BadRequest(
            f"{unknown[0]!r} is not a {kind} order parameter this proxy understands{hint}")
    if "amount" not in params:
        raise BadRequest("amount: required")
    amount = parse_decimal(params["amount"], "amount")
    price = None
    tif = None
    if kind == "limit":
        if "price" not in params:
            raise BadRequest("price: required for a limit order")
        price = parse_decimal(params["price"], "price")
        flags = [_TIF_FLAGS[f] for f in sorted(_TIF_FLAGS) if _flag(params, f)]
        if len(flags) > 1:
            raise BadRequest("send at most one of ioc_order, fok_order, moc_order, gtd_order, "
                             "daily_order")
        tif = flags[0] if flags else "gtc"
        if ("expire_time" in params) != (tif == "gtd"):
            raise BadRequest("expire_time: send it exactly when gtd_order is True")
        if "expire_time" in params:
            parse_integer(params["expire_time"], "expire_time")
    # Instant buys spend `amount` of the counter currency; instant sells do so only with
    # amount_in_counter. Market and limit amounts are base currency.
    quote_sized = kind == "instant" and (side == "buy" or _flag(params, "amount_in_counter"))
    if kind == "instant" and side == "buy" and "amount_in_counter" in params:
        raise BadRequest("amount_in_counter: only for instant sell orders")
    return Intent(
        symbol=pair, side=side, order_type=kind, time_in_force=tif,
        quantity=None if quote_sized else amount, quote_quantity=amount if quote_sized else None,
        price=price, client_order_id=_client_order_id(params.get("client_order_id")),
        # A perpetual's amount unit is not read from an instruments table here, so a notional
        # rule refuses it; spot amounts are base currency.
        instrument=None if pair.endswith("-perp") else Instrument(pair, "spot"),
        market="perp" if pair.endswith("-perp") else "spot",
    )


def _other_intent(ep: Endpoint, segments: list[str], params: Mapping[str, str]) -> Intent:
    pair = segments[-1] if ep.path.endswith("/{pair}") else None
    if "id" in params and not _ORDER_ID.fullmatch(params["id"]):
        raise BadRequest("id: digits only")
    if "id" in params and "client_order_id" in params:
        raise BadRequest("send id or client_order_id, not both")
    return Intent(symbol=pair, client_order_id=_client_order_id(params.get("client_order_id")))


EXCHANGE = Bitstamp()
