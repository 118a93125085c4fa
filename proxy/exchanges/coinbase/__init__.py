"""Coinbase Advanced Trade (``/api/v3/brokerage``) with CDP API keys.

Signing (SPECS.md §8): ``Authorization: Bearer <JWT>``, a fresh JWT per request, ES256 (EC
P-256 PEM) or EdDSA (base64 seed‖public key). The JWT names only ``METHOD host/path``, never the
query or body, so policy must read the JSON body itself: :func:`prepare` canonicalises it and
extracts one intent from ``order_configuration``. The claims are exactly those ccxt 4.5.90
sends (its ES256 form: ``iss`` coinbase-cloud, ``aud`` retail_rest_api_proxy, ``uri``; its
Ed25519 form: ``iss`` cdp, ``aud`` cdp_service, ``uris``), so a bot moving from ccxt to the
proxy changes nothing Coinbase can see. ``uri`` names the host actually sent to.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from proxy.errors import BadRequest, InstrumentError
from proxy.exchanges.base import (
    Catalogue,
    Credentials,
    Environment,
    NonceUnit,
    Pairs,
    dump_json,
    encode_pairs,
    endpoint,
    instrument_answer,
    parse_json_object,
    parse_pairs,
    positive_decimal,
    require_content_type,
)
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import (
    Lookup,
)
from proxy.exchanges.coinbase.capabilities import CAPABILITIES
from proxy.model.decimals import parse_decimal
from proxy.model.request import Action, Category, Inbound, Instrument, Intent, Outbound, Prepared, Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import EcKey, Ed25519Key, load_pem_private_key, looks_like_pem

P, R, T, C = Category.PUBLIC, Category.READ, Category.TRADE, Category.CANCEL
W, X, A = Category.WITHDRAW, Category.TRANSFER, Category.ADMIN
B = "/api/v3/brokerage"

CATALOGUE = Catalogue([
    # public market data (v3 "market" routes need no key; v2 routes ccxt uses for currencies)
    endpoint("GET", f"{B}/time", P),
    *(endpoint("GET", f"{B}/market/{p}", P) for p in (
        "products", "products/{product_id}", "products/{product_id}/candles",
        "products/{product_id}/ticker", "product_book",
    )),
    *(endpoint("GET", f"/v2/{p}", P) for p in (
        "time", "currencies", "currencies/crypto", "exchange-rates", "prices/{pair}/spot",
        "prices/{pair}/buy", "prices/{pair}/sell",
    )),
    # reads
    *(endpoint("GET", f"{B}/{p}", R) for p in (
        "accounts", "accounts/{account_uuid}", "products", "products/{product_id}",
        "products/{product_id}/candles", "products/{product_id}/ticker", "product_book",
        "best_bid_ask", "transaction_summary", "orders/historical/batch",
        "orders/historical/fills", "orders/historical/{order_id}", "portfolios",
        "portfolios/{portfolio_uuid}", "cfm/balance_summary", "cfm/positions",
        "cfm/positions/{product_id}", "key_permissions",
    )),
    # ccxt's default fetch_balance reads the Coinbase App v2 accounts with the same JWT
    endpoint("GET", "/v2/accounts", R),
    endpoint("GET", "/v2/accounts/{account_id}", R),
    # trading
    endpoint("POST", f"{B}/orders", T, name="order"),
    endpoint("POST", f"{B}/orders/batch_cancel", C, batch=True),
    # never: catalogued so that the refusal names the category (unlisted paths are refused too)
    endpoint("POST", "/v2/accounts/{account_id}/transactions", W),
    endpoint("POST", "/v2/accounts/{account_id}/withdrawals", W),
    endpoint("POST", "/v2/accounts/{account_id}/withdrawals/{withdrawal_id}/commit", W),
    endpoint("POST", "/v2/accounts/{account_id}/deposits", X),
    endpoint("POST", "/v2/accounts/{account_id}/deposits/{deposit_id}/commit", X),
    endpoint("POST", "/v2/accounts/{account_id}/addresses", A),
    endpoint("POST", f"{B}/portfolios/move_funds", X),
    endpoint("POST", f"{B}/intx/allocate", X),
    endpoint("POST", f"{B}/cfm/sweeps/schedule", X),
    endpoint("DELETE", f"{B}/cfm/sweeps", X),
    endpoint("POST", f"{B}/portfolios", A),
    endpoint("PUT", f"{B}/portfolios/{{portfolio_uuid}}", A),
    endpoint("DELETE", f"{B}/portfolios/{{portfolio_uuid}}", A),
])

#: Query keys that Coinbase documents as repeatable lists (``?order_status=OPEN&order_status=...``).
_LIST_KEYS = frozenset({
    "product_ids", "order_status", "order_ids", "order_types", "asset_filters",
    "order_placement_source", "trade_ids",
})
_PRODUCT = re.compile(r"[A-Z0-9]{1,20}(?:-[A-Z0-9]{1,20}){1,3}")
_CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_ORDER_ID = re.compile(r"[A-Za-z0-9\-]{1,64}")
_SIDES = {"BUY": "buy", "SELL": "sell"}
_ORDER_KEYS = frozenset({
    "client_order_id", "product_id", "side", "order_configuration", "leverage", "margin_type",
    "retail_portfolio_id", "self_trade_prevention_id",
})
_STOP_DIRECTIONS = frozenset({"STOP_DIRECTION_STOP_UP", "STOP_DIRECTION_STOP_DOWN"})


@dataclass(frozen=True)
class _Config:
    """One ``order_configuration`` kind: its fields, and the intent's type and time in force."""

    order_type: str
    tif: str
    required: frozenset[str]
    optional: frozenset[str] = frozenset()


def _cfg(order_type: str, tif: str, required: str, optional: str = "") -> _Config:
    return _Config(order_type, tif, frozenset(required.split()), frozenset(optional.split()))


_CONFIGS = {
    "market_market_ioc": _cfg("market", "IOC", "", "quote_size base_size"),
    "market_market_fok": _cfg("market", "FOK", "", "quote_size base_size"),
    "sor_limit_ioc": _cfg("limit", "IOC", "base_size limit_price"),
    "limit_limit_gtc": _cfg("limit", "GTC", "base_size limit_price", "post_only"),
    "limit_limit_gtd": _cfg("limit", "GTD", "base_size limit_price end_time", "post_only"),
    "limit_limit_fok": _cfg("limit", "FOK", "base_size limit_price"),
    "stop_limit_stop_limit_gtc": _cfg(
        "stop_limit", "GTC", "base_size limit_price stop_price", "stop_direction"),
    "stop_limit_stop_limit_gtd": _cfg(
        "stop_limit", "GTD", "base_size limit_price stop_price end_time", "stop_direction"),
    "trigger_bracket_gtc": _cfg("bracket", "GTC", "base_size limit_price stop_trigger_price"),
    "trigger_bracket_gtd": _cfg(
        "bracket", "GTD", "base_size limit_price stop_trigger_price end_time"),
}
_MONEY = ("base_size", "quote_size", "limit_price", "stop_price", "stop_trigger_price")
_END_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z")


class _CdpEd25519Key(Ed25519Key):
    """An Ed25519 key that hands its key object to pyjwt (as :class:`EcKey` does for ES256)."""

    __slots__ = ()

    @property
    def private_key(self) -> ed25519.Ed25519PrivateKey:
        return self._key


@dataclass(frozen=True)
class Coinbase:
    """Coinbase Advanced Trade. JWTs live ``jwt_lifetime`` seconds (Coinbase's limit: 120)."""

    name: str = "coinbase"
    nonce_unit: NonceUnit | None = None
    jwt_lifetime: int = 120

    @property
    def capabilities(self) -> Capabilities:
        """What generic code may ask of Coinbase: the "capabilities" section below."""
        return CAPABILITIES

    def base_url(self, environment: Environment) -> str:
        return {"live": "https://api.coinbase.com", "testnet": "https://api-sandbox.coinbase.com"}[
            environment
        ]

    def load_credentials(self, fields: Mapping[str, Secret], version: int) -> Credentials:
        api_key, secret = _require(fields, "api_key"), _require(fields, "api_secret")
        if looks_like_pem(secret):
            loaded = load_pem_private_key(secret)
            if not isinstance(loaded, EcKey) or not isinstance(
                loaded.private_key.curve, ec.SECP256R1
            ):
                raise ValueError("api_secret: a Coinbase PEM key must be an EC P-256 key (ES256)")
            key: EcKey | Ed25519Key = loaded
        else:
            key = _load_ed25519(secret)
        return Credentials(api_key=api_key.reveal(), key=key, version=version)

    def prepare(self, inbound: Inbound) -> Prepared:
        ep = CATALOGUE.lookup(inbound.method, inbound.raw_path)
        path = inbound.raw_path
        query = _parse_query(inbound.raw_query)
        body = b""
        intents: tuple[Intent, ...] = ()
        if inbound.method in ("GET", "DELETE"):
            if inbound.body:
                raise BadRequest(f"body: send {inbound.method} parameters in the query string")
        else:
            if query:
                raise BadRequest("query: send this endpoint's parameters in the JSON body")
            require_content_type(inbound, "application/json")
            obj = parse_json_object(inbound.body) if inbound.body else {}
            if ep.action is Action.PLACE:
                intents = (_order_intent(obj),)
            elif ep.action is Action.CANCEL:
                _check_cancel(obj)
            body = dump_json(obj).encode() if inbound.body else b""
        return Prepared(
            method=inbound.method, path=path, query=encode_pairs(query), body=body,
            content_type="application/json" if body else None, endpoint=ep, intents=intents,
        )

    def order_lookups(self, prepared: Prepared) -> tuple[Prepared, ...]:
        """The placement itself: Coinbase creates nothing for a ``client_order_id`` it has
        seen and answers with the existing order, so asking again is the lookup."""
        return (prepared,)

    def lookup_result(self, status: int, body: bytes) -> Lookup:
        """A successful answer names the order (existing, or placed now): found."""
        try:
            data = parse_json_object(body, "lookup")
        except BadRequest:
            return Lookup.UNKNOWN
        return Lookup.FOUND if status == 200 and data.get("success") is True else Lookup.UNKNOWN

    def instrument_request(self, symbol: str, market: str) -> Outbound:
        """``GET /api/v3/brokerage/market/products/{product_id}`` for a futures product."""
        if market != "FUTURE" or not _PRODUCT.fullmatch(symbol):
            raise InstrumentError("no Coinbase product table for this product")
        return Outbound("GET", f"{B}/market/products/{symbol}", (), b"")

    def parse_instrument(self, symbol: str, market: str, body: bytes) -> Instrument:
        return parse_instrument(symbol, market, body)

    def sign(self, prepared: Prepared, creds: Credentials, stamp: Stamp, host: str) -> Outbound:
        headers: tuple[tuple[str, str], ...] = ()
        if prepared.category is not Category.PUBLIC:
            token = jwt_for(creds, prepared.method, host, prepared.path, stamp,
                            lifetime=self.jwt_lifetime)
            headers = (("Authorization", f"Bearer {token}"),)
        if prepared.body:
            headers = (*headers, ("Content-Type", "application/json"))
        target = f"{prepared.path}?{prepared.query}" if prepared.query else prepared.path
        return Outbound(prepared.method, target, headers, prepared.body, stamp)


def jwt_for(
    creds: Credentials, method: str, host: str, path: str, stamp: Stamp, *, lifetime: int = 120
) -> str:
    """The CDP JWT for one request: ``uri`` is ``METHOD host/path`` (no scheme, no query)."""
    seconds = stamp.now_ms // 1000
    uri = f"{method} {host}{path}"
    try:
        nonce = uuid.UUID(stamp.unique).hex  # 32 hex characters, as ccxt's random_bytes(16)
    except ValueError:
        raise ValueError("Stamp.unique must be a UUID string for Coinbase") from None
    key = creds.key
    headers = {"kid": creds.api_key, "nonce": nonce}
    claims: dict[str, Any]
    if isinstance(key, EcKey):
        claims = {
            "aud": ["retail_rest_api_proxy"], "iss": "coinbase-cloud", "nbf": seconds,
            "exp": seconds + lifetime, "sub": creds.api_key, "iat": seconds, "uri": uri,
        }
        return jwt.encode(claims, key.private_key, algorithm="ES256", headers=headers)
    if isinstance(key, _CdpEd25519Key):
        claims = {
            "aud": ["cdp_service"], "iss": "cdp", "nbf": seconds, "exp": seconds + lifetime,
            "sub": creds.api_key, "iat": seconds, "uris": [uri],
        }
        return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers=headers)
    raise TypeError("Coinbase signs with ES256 or Ed25519 CDP keys")


def _load_ed25519(secret: Secret) -> _CdpEd25519Key:
    """A CDP Ed25519 secret: base64 of 64 bytes, the seed then its public key."""
    try:
        raw = base64.b64decode(secret.reveal().strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "api_secret: not a PEM EC key nor a base64 Ed25519 secret; legacy HMAC keys are "
            "not supported, create a CDP key"
        ) from None
    if len(raw) != 64:
        raise ValueError("api_secret: a CDP Ed25519 secret decodes to 64 bytes (seed + public key)")
    private = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if public != raw[32:]:
        raise ValueError("api_secret: the Ed25519 secret's public half does not match its seed")
    return _CdpEd25519Key(private)


def _require(fields: Mapping[str, Secret], name: str) -> Secret:
    value = fields.get(name)
    if value is None or not value.reveal():
        raise ValueError(f"{name}: missing from the Vault secret")
    return value


def _parse_query(raw: bytes) -> Pairs:
    """Strict pairs, where only Coinbase's documented list keys may repeat (kept in order)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("query: non-ASCII bytes must be percent-encoded") from None
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for part in text.split("&") if text else ():
        ((key, value),) = parse_pairs(part, "query")
        if key in seen and key not in _LIST_KEYS:
            raise BadRequest(f"query: parameter {key[:40]!r} appears more than once; send it once")
        seen.add(key)
        pairs.append((key, value))
    if len(pairs) > 64:
        raise BadRequest("query: more than 64 parameters")
    return tuple(pairs)


def _text(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{where}{key}: required, as a JSON string")
    return value


def _order_intent(obj: Mapping[str, Any]) -> Intent:
    unknown = sorted(set(obj) - _ORDER_KEYS)
    if unknown:
        raise BadRequest(f"{unknown[0]!r} is not an order field this proxy understands")
    coid = _text(obj, "client_order_id", "")
    if not _CLIENT_ORDER_ID.fullmatch(coid):
        raise BadRequest("client_order_id: 1-128 characters from A-Z, a-z, 0-9 and '._:-'")
    product = _text(obj, "product_id", "")
    if not _PRODUCT.fullmatch(product):
        raise BadRequest("product_id: use Coinbase's upper-case product id, e.g. BTC-USD")
    side = obj.get("side")
    if side not in _SIDES:
        raise BadRequest("side: use BUY or SELL")
    for key in ("leverage", "margin_type", "retail_portfolio_id", "self_trade_prevention_id"):
        if key in obj:
            _text(obj, key, "")
    if "leverage" in obj:
        parse_decimal(obj["leverage"], "leverage")
    config = obj.get("order_configuration")
    if not isinstance(config, dict) or len(config) != 1:
        raise BadRequest("order_configuration: an object with exactly one order kind")
    ((kind, fields),) = config.items()
    spec = _CONFIGS.get(kind)
    if spec is None:
        raise BadRequest(f"order_configuration: {kind[:40]!r} is not a kind this proxy understands")
    if not isinstance(fields, dict):
        raise BadRequest(f"order_configuration.{kind}: must be an object")
    where = f"order_configuration.{kind}."
    unknown = sorted(set(fields) - spec.required - spec.optional)
    if unknown:
        raise BadRequest(f"{where}{unknown[0]}: not a field of this order kind")
    missing = sorted(spec.required - set(fields))
    if missing:
        raise BadRequest(f"{where}{missing[0]}: required")
    money = {k: parse_decimal(_text(fields, k, where), where + k) for k in _MONEY if k in fields}
    if "post_only" in fields and not isinstance(fields["post_only"], bool):
        raise BadRequest(f"{where}post_only: true or false")
    if "stop_direction" in fields and fields["stop_direction"] not in _STOP_DIRECTIONS:
        raise BadRequest(f"{where}stop_direction: {' or '.join(sorted(_STOP_DIRECTIONS))}")
    if "end_time" in fields and not _END_TIME.fullmatch(_text(fields, "end_time", where)):
        raise BadRequest(f"{where}end_time: RFC 3339 UTC, e.g. 2026-01-31T12:00:00Z")
    base, quote = money.get("base_size"), money.get("quote_size")
    if spec.order_type == "market" and (base is None) == (quote is None):
        raise BadRequest(f"{where}: send base_size or quote_size, exactly one")
    spot = product.count("-") == 1
    if quote is not None and not spot:
        raise BadRequest(f"{where}quote_size: only for spot products; send base_size (contracts)")
    return Intent(
        symbol=product, side=_SIDES[side], order_type=spec.order_type, time_in_force=spec.tif,
        quantity=base, quote_quantity=quote if spot else None, price=money.get("limit_price"),
        client_order_id=coid, market="SPOT" if spot else "FUTURE",
        instrument=Instrument(product, "spot") if spot else None,
        prices=tuple(money[k] for k in ("stop_price", "stop_trigger_price") if k in money),
    )


def parse_instrument(symbol: str, market: str, body: bytes) -> Instrument:
    """A futures product from ``/api/v3/brokerage/market/products/{id}``: ``base_size`` counts
    contracts of ``future_product_details.contract_size`` base units (CB-DOC "Get public
    product")."""
    data = instrument_answer(body)
    if not isinstance(data, dict) or data.get("product_id") != symbol:
        raise InstrumentError("coinbase product: the answer is for another product")
    if data.get("product_type") != "FUTURE":
        raise InstrumentError("coinbase product: not a FUTURE product")
    details = data.get("future_product_details")
    if not isinstance(details, dict):
        raise InstrumentError("coinbase product: no future_product_details")
    return Instrument(symbol, "linear", positive_decimal(details.get("contract_size"), "contract_size"))


def _check_cancel(obj: Mapping[str, Any]) -> None:
    if set(obj) != {"order_ids"}:
        raise BadRequest("body: batch_cancel takes exactly {\"order_ids\": [...]}")
    ids = obj["order_ids"]
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
        raise BadRequest("order_ids: a list of 1-100 order ids")
    for order_id in ids:
        if not isinstance(order_id, str) or not _ORDER_ID.fullmatch(order_id):
            raise BadRequest("order_ids: each an order id string (letters, digits, '-')")


EXCHANGE = Coinbase()
