"""Bitget v2 classic spot (``/api/v2/spot/...``) and the public reads ccxt's load_markets needs.

Signing (docs/exchanges.md §4): ``timestamp + METHOD + path + ["?" + query] + body``, where ``query`` is
the parameters sorted by key and written *without* percent-encoding (Bitget's own sample and
ccxt both sign the decoded form; the URL carries the encoded form). HMAC keys sign
base64(HMAC-SHA256); RSA keys sign base64(SHA256withRSA, PKCS#1 v1.5). Auth is headers only
(``ACCESS-KEY``, ``ACCESS-SIGN``, ``ACCESS-TIMESTAMP`` in ms, ``ACCESS-PASSPHRASE``), so what a
bot or ccxt put in headers is simply never copied. POST bodies are compact JSON.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from proxy.errors import BadRequest
from proxy.exchanges.base import (
    Catalogue,
    Credentials,
    Environment,
    NonceUnit,
    Pairs,
    dump_json,
    endpoint,
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
from proxy.exchanges.bitget.capabilities import CAPABILITIES, CLIENT_ORDER_ID_RULES, lookup_result
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import (
    Lookup,
    batch_inbound_with,
    inbound_with,
    lookup_inbound,
    member_appended,
)
from proxy.model.decimals import parse_decimal, parse_integer
from proxy.model.request import Category, Inbound, Instrument, Intent, Outbound, Prepared, Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey, RsaKey, load_pem_private_key, looks_like_pem

P, R, T, C = Category.PUBLIC, Category.READ, Category.TRADE, Category.CANCEL
W, X, A = Category.WITHDRAW, Category.TRANSFER, Category.ADMIN

CATALOGUE = Catalogue([
    # public market data (ccxt load_markets: spot symbols, margin currencies, mix contracts)
    endpoint("GET", "/api/v2/public/time", P),
    *(endpoint("GET", f"/api/v2/spot/{p}", P) for p in (
        "public/coins", "public/symbols", "market/vip-fee-rate", "market/tickers",
        "market/merge-depth", "market/orderbook", "market/candles", "market/history-candles",
        "market/fills", "market/fills-history",
    )),
    endpoint("GET", "/api/v2/mix/market/contracts", P),
    endpoint("GET", "/api/v2/margin/currencies", P),
    # reads
    *(endpoint("GET", f"/api/v2/spot/{p}", R) for p in (
        "account/info", "account/assets", "account/bills", "trade/orderInfo",
        "trade/unfilled-orders", "trade/history-orders", "trade/fills",
    )),
    endpoint("GET", "/api/v2/common/trade-rate", R),
    # trading
    endpoint("POST", "/api/v2/spot/trade/place-order", T, name="order"),
    endpoint("POST", "/api/v2/spot/trade/batch-orders", T, name="order", batch=True),
    endpoint("POST", "/api/v2/spot/trade/cancel-order", C),
    endpoint("POST", "/api/v2/spot/trade/batch-cancel-order", C, batch=True),
    endpoint("POST", "/api/v2/spot/trade/cancel-symbol-order", C),
    # never (docs/exchanges.md §4); any unlisted path is refused as well
    endpoint("POST", "/api/v2/spot/wallet/withdrawal", W),
    endpoint("POST", "/api/v2/spot/wallet/cancel-withdrawal", W),
    endpoint("POST", "/api/v3/account/withdrawal", W),
    endpoint("POST", "/api/v2/spot/wallet/transfer", X),
    endpoint("POST", "/api/v3/account/transfer", X),
    endpoint("POST", "/api/v2/spot/wallet/subaccount-transfer", X),
    endpoint("POST", "/api/v2/user/create-virtual-subaccount-apikey", A),
    endpoint("POST", "/api/v2/user/modify-virtual-subaccount-apikey", A),
    endpoint("POST", "/api/v2/user/batch-create-subaccount-and-apikey", A),
    endpoint("POST", "/api/v2/broker/manage/create-subaccount-apikey", A),
    endpoint("POST", "/api/v2/broker/manage/modify-subaccount-apikey", A),
    endpoint("POST", "/api/v2/broker/manage/delete-subaccount-apikey", A),
    endpoint("POST", "/api/v3/broker/create-sub-apikey", A),
    endpoint("POST", "/api/v3/broker/delete-sub-apikey", A),
    endpoint("GET", "/api/v3/account/withdraw-address", A),
])

JSON = "application/json"
_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")
# FAQ Q12: [0-9a-zA-Z] and - + _ # , "length less than 50".
_CLIENT_OID = re.compile(r"[0-9a-zA-Z\-+_#]{1,49}")
_ORDER_ID = re.compile(r"[0-9]{1,30}")
_SIDES = {"buy", "sell"}
_TYPES = {"limit", "market"}
_FORCES = {"gtc", "post_only", "fok", "ioc"}
_STP = {"none", "cancel_taker", "cancel_maker", "cancel_both"}
_ORDER_FIELDS = frozenset({
    "symbol", "side", "orderType", "force", "price", "size", "clientOid", "stpMode",
    "requestTime", "receiveWindow",
})
_MAX_BATCH = 50


@dataclass(frozen=True)
class Bitget:
    """The Bitget v2 spot exchange. ``paper_trading`` adds Bitget's demo header (PAPTRADING: 1)."""

    name: str = "bitget"
    nonce_unit: NonceUnit | None = None
    paper_trading: bool = False

    @property
    def capabilities(self) -> Capabilities:
        """What generic code may ask of Bitget: the "capabilities" section below."""
        return CAPABILITIES

    def base_url(self, environment: Environment) -> str:
        # Demo trading uses the live host with the PAPTRADING header (see ``paper_trading``).
        return {"live": "https://api.bitget.com", "testnet": "https://api.bitget.com"}[environment]

    def load_credentials(self, fields: Mapping[str, Secret], version: int) -> Credentials:
        api_key, secret = _require(fields, "api_key"), _require(fields, "api_secret")
        passphrase = _require(fields, "passphrase")
        key: HmacKey | RsaKey
        if looks_like_pem(secret):
            loaded = load_pem_private_key(secret)
            if not isinstance(loaded, RsaKey):
                raise ValueError("api_secret: Bitget takes HMAC secrets or RSA private keys")
            key = loaded
        else:
            key = HmacKey(secret)
        return Credentials(
            api_key=api_key.reveal(), key=key, passphrase=passphrase, version=version
        )

    def prepare(self, inbound: Inbound) -> Prepared:
        ep = CATALOGUE.lookup(inbound.method, inbound.raw_path)
        if inbound.method == "GET":
            if inbound.body:
                raise BadRequest("body: GET requests take their parameters in the query string")
            pairs = tuple(sorted(parse_pairs(inbound.raw_query, "query")))
            for k, v in pairs:
                if any(c in v or c in k for c in "&="):
                    raise BadRequest(f"query: {k[:40]!r} contains '&' or '=', which Bitget "
                                     "signs undecoded and cannot be told apart; remove them")
            reads: tuple[Intent, ...] = (_read_intent(dict(pairs)),) if ep.category is R else ()
            return Prepared(
                method="GET", path=ep.path, query=_encode_query(pairs), body=b"",
                content_type=None, endpoint=ep, intents=reads,
            )
        if inbound.raw_query:
            raise BadRequest("query: send POST parameters in the JSON body, not the query string")
        require_content_type(inbound, JSON)
        obj = parse_json_object(inbound.body) if inbound.body else {}
        intents = _intents(ep.category, ep.batch, obj)
        return Prepared(
            method="POST", path=ep.path, query="", body=dump_json(obj).encode(),
            content_type=JSON, endpoint=ep, intents=intents,
        )

    def with_client_order_id(self, prepared: Prepared, coid: str) -> Prepared:
        """``prepared`` (an order without an id) with the client order id added: appended to
        the canonical JSON without parsing the order again (``prepare`` keeps the members in
        order and reads the id from nowhere else), else by a re-parse."""
        field = CLIENT_ORDER_ID_RULES.field
        fast = member_appended(prepared, field, coid) if _CLIENT_OID.fullmatch(coid) else None
        return fast or self.prepare(inbound_with(prepared, field, coid))

    def order_lookups(self, prepared: Prepared) -> tuple[Prepared, ...]:
        """``GET /api/v2/spot/trade/orderInfo?clientOid=..``: open and past orders alike
        (``clientOid`` is unique per account over all orders)."""
        coid = prepared.client_order_id
        assert coid is not None
        return (self.prepare(lookup_inbound("GET", "/api/v2/spot/trade/orderInfo",
                                            [("clientOid", coid)])),)

    def lookup_result(self, status: int, body: bytes) -> Lookup:
        """``00000`` with the order: found; ``43001`` (ccxt: OrderNotFound) or an empty list:
        absent; anything else proves nothing."""
        return lookup_result(status, body)

    def with_batch_client_order_ids(self, prepared: Prepared, ids: Sequence[str | None]) -> Prepared:
        """``prepared`` (a batch placement) with ``ids[i]`` added to order ``i`` that has none."""
        values = [c for c in ids]
        return self.prepare(batch_inbound_with(prepared, "orderList", CLIENT_ORDER_ID_RULES.field, values))

    def sign(self, prepared: Prepared, creds: Credentials, stamp: Stamp, host: str) -> Outbound:
        headers: tuple[tuple[str, str], ...] = ()
        if prepared.category is not Category.PUBLIC:
            if creds.passphrase is None:
                raise ValueError("Bitget credentials need a passphrase")
            timestamp = str(stamp.now_ms)
            payload = prehash(timestamp, prepared.method, prepared.path, prepared.query,
                              prepared.body)
            headers = (
                ("ACCESS-KEY", creds.api_key),
                ("ACCESS-SIGN", signature_for(creds, payload)),
                ("ACCESS-TIMESTAMP", timestamp),
                ("ACCESS-PASSPHRASE", creds.passphrase.reveal()),
            )
        if prepared.method == "POST":
            headers = (*headers, ("Content-Type", JSON))
        if self.paper_trading:
            headers = (*headers, ("PAPTRADING", "1"))
        target = f"{prepared.path}?{prepared.query}" if prepared.query else prepared.path
        return Outbound(prepared.method, target, headers, prepared.body, stamp)


def prehash(timestamp: str, method: str, path: str, query: str, body: bytes) -> bytes:
    """The string Bitget signs; ``query`` is the wire (encoded) query, signed decoded."""
    signed_query = "?" + _decoded(query) if query else ""
    return f"{timestamp}{method.upper()}{path}{signed_query}".encode() + body


def signature_for(creds: Credentials, payload: bytes) -> str:
    key = creds.key
    if isinstance(key, HmacKey):
        return key.b64digest(payload)
    if isinstance(key, RsaKey):
        return base64.b64encode(key.sign_pkcs1_sha256(payload)).decode()
    raise TypeError("Bitget signs with HMAC or RSA keys")


def _encode_query(pairs: Pairs) -> str:
    # As ccxt sends it: form-encoded, with '$' left readable (ccxt #21169).
    return urlencode(pairs).replace("%24", "$")


def _decoded(query: str) -> str:
    return "&".join(f"{k}={v}" for k, v in parse_pairs(query, "query"))


def _symbol(value: str | None, required: bool) -> str | None:
    if value is None:
        if required:
            raise BadRequest("symbol: required, e.g. BTCUSDT")
        return None
    if not _SYMBOL.fullmatch(value):
        raise BadRequest("symbol: use Bitget's upper-case symbol, e.g. BTCUSDT")
    return value


def _client_oid(value: str | None) -> str | None:
    if value is not None and not _CLIENT_OID.fullmatch(value):
        raise BadRequest("clientOid: 1-49 characters from 0-9, a-z, A-Z and - + _ #")
    return value


def _read_intent(params: Mapping[str, str]) -> Intent:
    symbol = _symbol(params.get("symbol"), required=False)
    return Intent(symbol=symbol, client_order_id=_client_oid(params.get("clientOid")))


def _intents(category: Category, batch: bool, obj: Mapping[str, Any]) -> tuple[Intent, ...]:
    if category is Category.TRADE:
        if not batch:
            return (_order_intent(obj, None),)
        return tuple(_order_intent(o, top) for o, top in _batch_items(obj, "orderList"))
    if category is Category.CANCEL:
        if not batch:
            return (_cancel_intent(obj, None),)
        return tuple(_cancel_intent(o, top) for o, top in _batch_items(obj, "orderList"))
    return ()


def _batch_items(obj: Mapping[str, Any], key: str) -> list[tuple[Mapping[str, Any], str | None]]:
    unknown = sorted(set(obj) - {"symbol", "batchMode", key})
    if unknown:
        raise BadRequest(f"body: {unknown[0]!r} is not a batch field this proxy understands")
    mode = _text(obj, "batchMode")
    if mode not in (None, "single", "multiple"):
        raise BadRequest("batchMode: use single or multiple")
    top = _symbol(_text(obj, "symbol"), required=mode != "multiple")
    items = obj.get(key)
    if not isinstance(items, list) or not items:
        raise BadRequest(f"{key}: send a non-empty JSON list")
    if len(items) > _MAX_BATCH:
        raise BadRequest(f"{key}: at most {_MAX_BATCH} entries")
    if not all(isinstance(i, dict) for i in items):
        raise BadRequest(f"{key}: every entry must be a JSON object")
    return [(i, top) for i in items]


def _item_symbol(obj: Mapping[str, Any], top: str | None) -> str:
    own = _symbol(_text(obj, "symbol"), required=top is None)
    if own is not None and top is not None and own != top:
        raise BadRequest("symbol: a batch entry names a different symbol from the batch; "
                         "send one symbol (or batchMode multiple without a top-level symbol)")
    symbol = own or top
    assert symbol is not None
    return symbol


def _order_intent(obj: Mapping[str, Any], top: str | None) -> Intent:
    unknown = sorted(set(obj) - _ORDER_FIELDS)
    if unknown:
        raise BadRequest(f"{unknown[0]!r} is not an order field this proxy understands")
    symbol = _item_symbol(obj, top)
    side, otype = _text(obj, "side"), _text(obj, "orderType")
    if side not in _SIDES:
        raise BadRequest("side: use buy or sell")
    if otype not in _TYPES:
        raise BadRequest("orderType: use limit or market")
    force = _text(obj, "force")
    if force is not None and force.lower() not in _FORCES:
        raise BadRequest("force: use gtc, post_only, fok or ioc")
    stp = _text(obj, "stpMode")
    if stp is not None and stp not in _STP:
        raise BadRequest("stpMode: use none, cancel_taker, cancel_maker or cancel_both")
    for f in ("requestTime", "receiveWindow"):
        if (v := _text(obj, f)) is not None:
            parse_integer(v, f)
    size_text = _text(obj, "size")
    if size_text is None:
        raise BadRequest("size: required")
    size = parse_decimal(size_text, "size")
    price_text = _text(obj, "price")
    price = parse_decimal(price_text, "price") if price_text is not None else None
    if otype == "limit" and price is None:
        raise BadRequest("price: required for a limit order")
    if otype == "market" and price is not None:
        raise BadRequest("price: not allowed on a market order (a market buy's size is the "
                         "quote amount to spend)")
    # Place-order docs: size is base coins for limit and market sells, quote coins for market buys.
    quote_sized = otype == "market" and side == "buy"
    return Intent(
        symbol=symbol, side=side, order_type=otype,
        # a limit order without force is taken as gtc: whether Bitget then rests it or
        # refuses it, a time-in-force rule never passes an order it would not pass as gtc
        time_in_force=force.lower() if force else "gtc" if otype == "limit" else None,
        quantity=None if quote_sized else size, quote_quantity=size if quote_sized else None,
        price=price, client_order_id=_client_oid(_text(obj, "clientOid")),
        instrument=Instrument(symbol, "spot"),
    )


def _cancel_intent(obj: Mapping[str, Any], top: str | None) -> Intent:
    unknown = sorted(set(obj) - {"symbol", "orderId", "clientOid", "tpslType"})
    if unknown:
        raise BadRequest(f"{unknown[0]!r} is not a cancel field this proxy understands")
    symbol = _item_symbol(obj, top)
    order_id, coid = _text(obj, "orderId"), _client_oid(_text(obj, "clientOid"))
    if order_id is not None and not _ORDER_ID.fullmatch(order_id):
        raise BadRequest("orderId: digits only")
    if order_id is not None and coid is not None:
        raise BadRequest("send orderId or clientOid, not both (Bitget silently prefers orderId)")
    return Intent(symbol=symbol, client_order_id=coid)


EXCHANGE = Bitget()
PAPER_TRADING = Bitget(paper_trading=True)
