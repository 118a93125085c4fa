"""A strict Kraken spot emulator (docs/exchanges.md §7), independent of the proxy's signer.

Checks, as Kraken documents: the ``API-Key`` header ("EAPI:Invalid key"), ``API-Sign`` =
base64(HMAC-SHA512(base64decode(secret), path + SHA256(nonce + body))) over the exact body
bytes received, form or JSON ("EAPI:Invalid signature", a string ccxt does not list), and a
nonce strictly above the last one accepted for the key ("EAPI:Invalid nonce"). Errors are
HTTP 200 ``{"error": [...]}``. Keeps an in-memory account: BalanceEx/Balance, AddOrder,
AddOrderBatch, QueryOrders, OpenOrders, ClosedOrders, CancelOrder, CancelOrderBatch, CancelAll;
a ``cl_ord_id`` already used by an open order is refused with "EOrder:Duplicate order"
(UNVERIFIED exact text). Pairs resolve by id or altname, as Kraken does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from proxy_devkit.emulator.kraken_stream import order_event, private_stream
from proxy_devkit.emulator.recorder import Received
from proxy_devkit.emulator.state import EmulatorState

#: id -> (altname, wsname, base asset, quote asset, reference price)
PAIRS = {
    "XXBTZUSD": ("XBTUSD", "XBT/USD", "XXBT", "ZUSD", Decimal("50000")),
    "XETHZUSD": ("ETHUSD", "ETH/USD", "XETH", "ZUSD", Decimal("3000")),
    "XETHXXBT": ("ETHXBT", "ETH/XBT", "XETH", "XXBT", Decimal("0.06")),
}
ASSETS = {"XXBT": ("XBT", 10, 5), "XETH": ("ETH", 10, 5), "ZUSD": ("USD", 4, 2)}
FORBIDDEN_METHODS = frozenset({
    "Withdraw", "WithdrawCancel", "WithdrawAddresses", "WalletTransfer", "AccountTransfer",
    "CreateSubaccount", "GetApiKeyInfo",
})


class _Reject(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class KrakenState(EmulatorState):
    secrets: dict[str, bytes] = field(default_factory=dict)
    last_nonce: dict[str, int] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(default_factory=lambda: {
        "ZUSD": Decimal("100000"), "XXBT": Decimal("2"), "XETH": Decimal("10"),
    })
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: WebSocket tokens issued by GetWebSocketsToken: token -> (api key, when)
    ws_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_txid(self) -> str:
        n = next(self._ids)
        letters = string.ascii_uppercase
        tail = "".join(letters[(n // 26**i) % 26] for i in range(6))
        return f"OEMU{n % 100:02d}-{tail[:5]}-{tail}"


def create(keys: Mapping[str, Mapping[str, str]]) -> tuple[KrakenState, Starlette]:
    """An emulator knowing ``keys``: api_key -> Vault-style fields (``api_secret`` base64)."""
    state = KrakenState()
    for api_key, fields in keys.items():
        state.secrets[api_key] = base64.b64decode(fields["api_secret"], validate=True)
    return state, create_app(state)


def create_app(state: KrakenState) -> Starlette:
    async def handle(request: Request) -> JSONResponse:
        body = await request.body()
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        headers = tuple(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]
        )
        path = request.url.path
        seen = Received(request.method, path, raw_query, headers, body, True)
        try:
            result = _dispatch(state, request, raw_query, body)
        except _Reject as rej:
            state.recorder.add(replace(seen, accepted=False, error=rej.message))
            return JSONResponse({"error": [rej.message]})
        state.recorder.add(seen)
        return JSONResponse({"error": [], "result": result})

    async def stream(ws: WebSocket) -> None:
        await private_stream(state, ws)

    return Starlette(routes=[WebSocketRoute("/v2", stream),
                             Route("/{path:path}", handle, methods=["GET", "POST"])])


def _dispatch(state: KrakenState, request: Request, raw_query: str, body: bytes) -> Any:
    method, path, headers = request.method, request.url.path, request.headers
    if path.startswith("/0/public/"):
        return _public(state, path.removeprefix("/0/public/"), dict(parse_qsl(raw_query)))
    if not path.startswith("/0/private/") or method != "POST":
        raise _Reject("EGeneral:Unknown method")
    params = _authenticate(state, path, body, headers)
    with state.lock:
        if path == "/0/private/GetWebSocketsToken":
            token = base64.b64encode(secrets.token_bytes(32)).decode()
            state.ws_tokens[token] = (str(headers.get("api-key")), state.clock())
            return {"token": token, "expires": 900}
        return _private(state, path.removeprefix("/0/private/"), params)


def _authenticate(state: KrakenState, path: str, body: bytes, headers: Any) -> dict[str, Any]:
    api_key = headers.get("api-key")
    secret = state.secrets.get(api_key or "")
    if secret is None:
        raise _Reject("EAPI:Invalid key")
    ctype = (headers.get("content-type") or "").split(";")[0].strip().lower()
    try:
        if ctype == "application/json":
            params = json.loads(body.decode("utf-8"), parse_float=Decimal)
            if not isinstance(params, dict):
                raise _Reject("EGeneral:Invalid arguments")
        else:
            text = body.decode("utf-8")
            params = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
    except (ValueError, UnicodeDecodeError):
        raise _Reject("EGeneral:Invalid arguments") from None
    nonce_value = params.get("nonce")
    nonce = str(nonce_value) if isinstance(nonce_value, str | int) else ""
    if not nonce.isdigit():
        raise _Reject("EAPI:Invalid nonce")
    inner = hashlib.sha256(nonce.encode() + body).digest()
    expected = base64.b64encode(hmac.new(secret, path.encode() + inner, hashlib.sha512).digest())
    if not hmac.compare_digest(expected, (headers.get("api-sign") or "").encode()):
        raise _Reject("EAPI:Invalid signature")
    assert api_key is not None
    with state.lock:
        if int(nonce) <= state.last_nonce.get(api_key, 0):
            raise _Reject("EAPI:Invalid nonce")
        state.last_nonce[api_key] = int(nonce)
    return params


def _public(state: KrakenState, name: str, q: dict[str, str]) -> Any:
    now = state.clock()
    if name == "Time":
        return {"unixtime": int(now), "rfc1123": formatdate(now, usegmt=True)}
    if name == "SystemStatus":
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"status": "online", "timestamp": stamp}
    if name == "Assets":
        return {a: {"aclass": "currency", "altname": alt, "decimals": d, "display_decimals": dd,
                    "status": "enabled"} for a, (alt, d, dd) in ASSETS.items()}
    if name == "AssetPairs":
        return {pid: _pair_info(pid) for pid in PAIRS}
    if name == "Ticker":
        pid = _resolve(q.get("pair", ""))
        ref = str(PAIRS[pid][4])
        return {pid: {"a": [ref, "1", "1.000"], "b": [ref, "1", "1.000"], "c": [ref, "0.1"],
                      "v": ["10", "100"], "p": [ref, ref], "t": [10, 100], "l": [ref, ref],
                      "h": [ref, ref], "o": ref}}
    raise _Reject("EGeneral:Unknown method")


def _pair_info(pid: str) -> dict[str, Any]:
    alt, ws, base, quote, _ = PAIRS[pid]
    return {
        "altname": alt, "wsname": ws, "aclass_base": "currency", "base": base,
        "aclass_quote": "currency", "quote": quote, "lot": "unit", "cost_decimals": 5,
        "pair_decimals": 1 if quote == "ZUSD" else 5, "lot_decimals": 8, "lot_multiplier": 1,
        "leverage_buy": [], "leverage_sell": [], "fees": [[0, 0.26]], "fees_maker": [[0, 0.16]],
        "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40,
        "ordermin": "0.0001", "costmin": "0.5", "tick_size": "0.1", "status": "online",
    }


def _resolve(pair: str) -> str:
    for pid, info in PAIRS.items():
        if pair in (pid, info[0]):
            return pid
    raise _Reject("EQuery:Unknown asset pair")


def _private(state: KrakenState, name: str, p: dict[str, Any]) -> Any:
    if name in FORBIDDEN_METHODS:
        return {"refid": "FORBIDDEN-REACHED"}  # the proxy must never let these through
    if name == "Balance":
        return {a: f"{v:.4f}" for a, v in state.balances.items()}
    if name == "BalanceEx":
        return {a: {"balance": f"{v:.4f}", "hold_trade": "0.0000"}
                for a, v in state.balances.items()}
    if name == "AddOrder":
        return _add_order(state, p, _resolve(str(p.get("pair", ""))))
    if name == "AddOrderBatch":
        pid = _resolve(str(p.get("pair", "")))
        orders = p.get("orders")
        if not isinstance(orders, list) or not orders:
            raise _Reject("EGeneral:Invalid arguments:orders")
        return {"orders": [_add_order(state, o, pid) for o in orders]}
    coid_filter = p.get("cl_ord_id")  # OpenOrders/ClosedOrders: "restrict results to" this id
    if name == "OpenOrders":
        return {"open": {t: o for t, o in state.orders.items() if o["status"] == "open"
                         and coid_filter in (None, o.get("cl_ord_id"))}}
    if name == "ClosedOrders":
        closed = {t: o for t, o in state.orders.items() if o["status"] != "open"
                  and coid_filter in (None, o.get("cl_ord_id"))}
        return {"closed": closed, "count": len(closed)}
    if name == "QueryOrders":
        txids = str(p.get("txid", "")).split(",")
        if not all(t in state.orders for t in txids):
            raise _Reject("EOrder:Invalid order")
        return {t: state.orders[t] for t in txids}
    if name == "CancelOrder":
        _cancel(state, _find(state, p))
        return {"count": 1}
    if name == "CancelOrderBatch":
        refs = [{"txid": str(t)} for t in p.get("orders", [])]
        refs += [{"cl_ord_id": str(c)} for c in p.get("cl_ord_ids", [])]
        for ref in refs:
            _cancel(state, _find(state, ref))
        return {"count": len(refs)}
    if name == "CancelAll":
        open_orders = [o for o in state.orders.values() if o["status"] == "open"]
        for order in open_orders:
            _cancel(state, order)
        return {"count": len(open_orders)}
    raise _Reject("EGeneral:Unknown method")


def _find(state: KrakenState, p: Mapping[str, Any]) -> dict[str, Any]:
    for txid, order in state.orders.items():
        by_coid = "cl_ord_id" in p and order.get("cl_ord_id") == p["cl_ord_id"]
        if ("txid" in p and str(p["txid"]) == txid) or (by_coid and order["status"] == "open"):
            return order
    raise _Reject("EOrder:Unknown order")


_UUID_LONG = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_UUID_SHORT = re.compile(r"[0-9a-f]{32}", re.I)
_FREE_TEXT = re.compile(r"[\x20-\x7e]{1,18}")


def _valid_cl_ord_id(value: Any) -> bool:
    """Kraken's cl_ord_id: a long UUID, a short (32 hex) UUID, or free ASCII text of at most
    18 characters (docs.kraken.com, AddOrder ``cl_ord_id``)."""
    return isinstance(value, str) and bool(
        _UUID_LONG.fullmatch(value) or _UUID_SHORT.fullmatch(value) or _FREE_TEXT.fullmatch(value)
    )


def _cancel(state: KrakenState, order: dict[str, Any]) -> None:
    if order["status"] != "open":
        raise _Reject("EOrder:Unknown order")
    order["status"] = "canceled"
    order["closetm"] = state.clock()
    order_event(state, next(t for t, o in state.orders.items() if o is order), "canceled")


def _decimal(value: Any, name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _Reject(f"EGeneral:Invalid arguments:{name}") from None
    if not number.is_finite() or number <= 0:
        raise _Reject(f"EGeneral:Invalid arguments:{name}")
    return number


def _add_order(state: KrakenState, p: Mapping[str, Any], pid: str) -> dict[str, Any]:
    alt, _, base, quote, ref = PAIRS[pid]
    side, otype = p.get("type"), p.get("ordertype")
    if side not in ("buy", "sell"):
        raise _Reject("EGeneral:Invalid arguments:type")
    if otype not in ("limit", "market"):
        raise _Reject("EGeneral:Invalid arguments:ordertype")
    volume = _decimal(p.get("volume"), "volume")
    viqc = "viqc" in str(p.get("oflags", "")).split(",")
    coid = p.get("cl_ord_id")
    if coid is not None and not _valid_cl_ord_id(coid):
        raise _Reject("EGeneral:Invalid arguments:cl_ord_id")
    if coid is not None and any(
        o.get("cl_ord_id") == coid and o["status"] == "open" for o in state.orders.values()
    ):
        raise _Reject("EOrder:Duplicate order")
    price = _decimal(p.get("price"), "price") if otype == "limit" else ref
    if viqc:
        if otype != "market":
            raise _Reject("EGeneral:Invalid arguments:viqc")
        volume = (volume / ref).quantize(Decimal("0.00000001"))
    cost = volume * price
    spend_asset, spend = (quote, cost) if side == "buy" else (base, volume)
    if state.balances.get(spend_asset, Decimal(0)) < spend:
        raise _Reject("EOrder:Insufficient funds")
    txid = state.new_txid()
    now = state.clock()
    filled = otype == "market"
    if filled:
        state.balances[spend_asset] -= spend
        gain_asset, gain = (base, volume) if side == "buy" else (quote, cost)
        state.balances[gain_asset] = state.balances.get(gain_asset, Decimal(0)) + gain
    descr = f"{side} {volume:.8f} {alt} @ " + (f"limit {price}" if otype == "limit" else "market")
    state.orders[txid] = {
        "refid": None, "userref": int(p["userref"]) if "userref" in p else 0,
        **({"cl_ord_id": coid} if coid is not None else {}),
        "status": "closed" if filled else "open", "opentm": now, "starttm": 0, "expiretm": 0,
        "descr": {"pair": alt, "type": side, "ordertype": otype,
                  "price": str(price) if otype == "limit" else "0", "price2": "0",
                  "leverage": "none", "order": descr, "close": ""},
        "vol": f"{volume:.8f}", "vol_exec": f"{volume if filled else 0:.8f}",
        "cost": f"{cost if filled else 0:.5f}", "fee": "0.00000",
        "price": f"{price if filled else 0:.5f}", "stopprice": "0.00000",
        "limitprice": "0.00000", "misc": "", "oflags": str(p.get("oflags", "fciq")),
        **({"closetm": now} if filled else {}),
    }
    order_event(state, txid, "trade" if filled else "new")
    return {"descr": {"order": descr}, "txid": [txid]}


def order_notional(symbol: str, quantity: Decimal, price: Decimal) -> Decimal:
    """What an order is worth in quote units: this exchange trades spot here, where
    ``volume`` counts base units."""
    return quantity * price
