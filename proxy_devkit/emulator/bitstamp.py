"""A strict Bitstamp v2 emulator (docs/exchanges.md §5a), independent of the proxy's signer.

Verifies ``X-Auth-Signature`` = hex HMAC-SHA256 over ``"BITSTAMP " + key + METHOD + Host +
path + ["?" + query] + [Content-Type, only with a body] + nonce + timestamp + "v2" + body``,
with the Host header the request actually arrived with. The nonce must be a 36-character
lower-case string never seen in the last 150 s (API0004) and the timestamp within ±150 s of
server time. An empty body sent with a Content-Type is refused (API0020, the error ccxt works
around with ``foo=bar``); private requests with a query string are refused (400.018). Replies
carry ``X-Server-Auth-Signature`` = HMAC(secret, nonce + timestamp + Content-Type + body).

Error shape ``{"status": "error", "reason": ..., "code": "API00xx"}`` with HTTP 403. API0004
(nonce) and API0005 (signature) are confirmed by ccxt; the other API00xx codes used here
(API0002 unknown key, API0011 malformed X-Auth, API0010 version, API0017/API0018 timestamp,
API0021 content type) are recalled from Bitstamp's docs and UNVERIFIED. Order errors use the
documented ``response_code`` table (400.019 duplicate client_order_id, 400.009 balance).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from proxy_devkit.emulator.bitstamp_stream import USER_ID, order_event, private_stream
from proxy_devkit.emulator.recorder import Received
from proxy_devkit.emulator.state import EmulatorState

PAIRS = {
    "btcusd": ("BTC", "USD", Decimal("50000"), "Bitcoin / U.S. dollar"),
    "ethusd": ("ETH", "USD", Decimal("3000"), "Ether / U.S. dollar"),
}
WINDOW_MS = 150_000
FORM = "application/x-www-form-urlencoded"
_NONCE = re.compile(r"[0-9a-z\-]{36}")


@dataclass
class BitstampState(EmulatorState):
    secrets: dict[str, str] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(
        default_factory=lambda: {
            "usd": Decimal("100000"), "btc": Decimal("2"), "eth": Decimal("10")}
    )
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    nonces: dict[str, int] = field(default_factory=dict)
    #: WebSocket tokens issued by websockets_token: token -> when
    ws_tokens: dict[str, float] = field(default_factory=dict)
    #: the validity websockets_token states (tests lower it; subscriptions are checked with 60 s)
    ws_token_valid_sec: int = 60
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1_600_000_000))


class _Reject(Exception):
    def __init__(self, body: dict[str, Any], status: int = 403) -> None:
        super().__init__(str(body))
        self.body, self.status = body, status


def _auth_error(code: str, reason: str) -> _Reject:
    return _Reject({"status": "error", "reason": reason, "code": code}, 403)


def _order_error(response_code: str, reason: str) -> _Reject:
    return _Reject({"status": "error", "reason": {"__all__": [reason]},
                    "response_code": response_code}, 400)


def create(keys: Mapping[str, Mapping[str, str]]) -> tuple[BitstampState, Starlette]:
    """An emulator knowing ``keys``: api_key -> {"api_secret": HMAC secret}."""
    state = BitstampState()
    for api_key, fields in keys.items():
        state.secrets[api_key] = fields["api_secret"]
    return state, create_app(state)


def create_app(state: BitstampState) -> Starlette:
    async def handle(request: Request) -> Response:
        body = await request.body()
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        headers = tuple((k.decode("latin-1"), v.decode("latin-1"))
                        for k, v in request.scope["headers"])
        path = request.url.path
        try:
            result, reply_headers = _dispatch(state, request, raw_query, body)
        except _Reject as rej:
            state.recorder.add(Received(request.method, path, raw_query, headers, body, False,
                                        str(rej.body.get("code") or rej.body.get("response_code"))))
            return Response(json.dumps(rej.body), rej.status, media_type="application/json")
        state.recorder.add(Received(request.method, path, raw_query, headers, body, True))
        return Response(result, 200, headers=reply_headers, media_type="application/json")

    async def stream(ws: WebSocket) -> None:
        await private_stream(state, ws)

    return Starlette(routes=[WebSocketRoute("/", stream),
                             Route("/{path:path}", handle, methods=["GET", "POST"])])


def _dispatch(state: BitstampState, request: Request, raw_query: str,
              body: bytes) -> tuple[bytes, dict[str, str]]:
    path = request.url.path
    if request.method == "GET":
        return json.dumps(_public(path)).encode(), {}
    secret, nonce, timestamp = _authenticate(state, request, raw_query, body)
    if raw_query:
        raise _order_error("400.018", "GET parameters not allowed for this request.")
    params = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
    with state.lock:
        result = json.dumps(_private(state, path, params)).encode()
    server_sig = hmac.new(secret.encode(), nonce.encode() + timestamp.encode()
                          + b"application/json" + result, hashlib.sha256).hexdigest()
    return result, {"X-Server-Auth-Signature": server_sig}


def _public(path: str) -> Any:
    if path == "/api/v2/markets/":
        return [{"name": f"{b}/{q}", "market_symbol": pair, "base_currency": b,
                 "base_decimals": 8, "counter_currency": q, "counter_decimals": 2,
                 "minimum_order_value": "10", "trading": "Enabled",
                 "instant_order_counter_decimals": 2, "instant_and_market_orders": "Enabled",
                 "description": desc, "market_type": "SPOT"}
                for pair, (b, q, _, desc) in PAIRS.items()]
    m = re.fullmatch(r"/api/v2/ticker/([a-z]+)/", path)
    if m and m.group(1) in PAIRS:
        px = str(PAIRS[m.group(1)][2])
        return {"last": px, "high": px, "low": px, "vwap": px, "volume": "1", "bid": px,
                "ask": px, "timestamp": str(int(time.time())), "open": px, "open_24": px,
                "percent_change_24": "0.00", "side": "0", "pair": m.group(1).upper()}
    raise _Reject({"status": "error", "reason": "Not found"}, 404)


def _authenticate(state: BitstampState, request: Request, raw_query: str,
                  body: bytes) -> tuple[str, str, str]:
    h = request.headers
    x_auth = h.get("x-auth") or ""
    if not x_auth.startswith("BITSTAMP ") or len(x_auth) <= len("BITSTAMP "):
        raise _auth_error("API0011", "Wrong API key format")
    api_key = x_auth.removeprefix("BITSTAMP ")
    secret = state.secrets.get(api_key)
    if secret is None:
        raise _auth_error("API0002", "Invalid API key")
    if h.get("x-auth-version") != "v2":
        raise _auth_error("API0010", "Invalid version")
    nonce, timestamp = h.get("x-auth-nonce") or "", h.get("x-auth-timestamp") or ""
    if not timestamp.isdigit():
        raise _auth_error("API0018", "X-Auth-Timestamp header is in wrong format")
    now = state.now_ms()
    if abs(now - int(timestamp)) > WINDOW_MS:
        raise _auth_error("API0017", "X-Auth-Timestamp header is out of boundaries")
    ctype = h.get("content-type")
    if not body and ctype is not None:
        raise _auth_error("API0020", "Content-Type header should not be present")
    if body and (ctype or "").split(";")[0].strip() != FORM:
        raise _auth_error("API0021", "Content-Type header is not accepted")
    host = (h.get("host") or "").lower()
    query = f"?{raw_query}" if raw_query else ""
    message = (f"BITSTAMP {api_key}{request.method}{host}{request.url.path}{query}"
               f"{ctype if body else ''}{nonce}{timestamp}v2").encode() + body
    want = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, h.get("x-auth-signature") or ""):
        raise _auth_error("API0005", "Invalid signature")
    with state.lock:
        for seen, at in list(state.nonces.items()):
            if now - at > WINDOW_MS:
                del state.nonces[seen]
        if not _NONCE.fullmatch(nonce) or nonce in state.nonces:
            raise _auth_error("API0004", "Invalid nonce")
        state.nonces[nonce] = now
    return secret, nonce, timestamp


def _private(state: BitstampState, path: str, p: dict[str, str]) -> Any:
    if path == "/api/v2/websockets_token/":
        token = secrets.token_hex(16)
        state.ws_tokens[token] = state.clock()
        return {"valid_sec": state.ws_token_valid_sec, "token": token, "user_id": USER_ID}
    if path == "/api/v2/account_balances/":
        return [{"currency": c, "total": f"{v + _reserved(state, c):f}", "available": f"{v:f}",
                 "reserved": f"{_reserved(state, c):f}"} for c, v in sorted(state.balances.items())]
    m = re.fullmatch(r"/api/v2/(buy|sell)/(?:(market|instant)/)?([a-z0-9]+)/", path)
    if m:
        return _place(state, m.group(1), m.group(2) or "limit", m.group(3), p)
    if path == "/api/v2/cancel_order/":
        order = _find(state, p)
        if order["status"] != "Open":
            raise _order_error("404.002", "Order not found.")
        _release(state, order)
        order["status"] = "Canceled"
        order_event(state, order, "order_deleted")
        return {"id": int(order["id"]), "amount": float(order["amount"]),
                "price": float(order["price"]), "type": int(order["type"])}
    if path == "/api/v2/order_status/":
        o = _find(state, p)
        return {"id": o["id"], "datetime": o["datetime"], "type": "Buy" if o["type"] == "0"
                else "Sell", "status": o["status"], "market": o["market"], "transactions": [],
                "amount_remaining": o["amount"] if o["status"] != "Finished" else "0",
                "client_order_id": o["client_order_id"]}
    m = re.fullmatch(r"/api/v2/open_orders/([a-z0-9]+)/", path)
    if m:
        pair = m.group(1)
        return [{k: v for k, v in o.items() if k != "status"} for o in state.orders.values()
                if o["status"] == "Open" and pair in ("all", o["pair"])]
    if path == "/api/v2/btc_withdrawal/":
        return {"id": 1}  # the proxy must never let this through
    raise _Reject({"status": "error", "reason": "Not found"}, 404)


def _reserved(state: BitstampState, currency: str) -> Decimal:
    total = Decimal(0)
    for o in state.orders.values():
        if o["status"] == "Open":
            spend, amount = _hold(o)
            total += amount if spend == currency else 0
    return total


def _hold(order: Mapping[str, Any]) -> tuple[str, Decimal]:
    base, quote = order["pair"][:3], order["pair"][3:]
    if order["type"] == "0":
        return quote, Decimal(order["amount"]) * Decimal(order["price"])
    return base, Decimal(order["amount"])


def _release(state: BitstampState, order: Mapping[str, Any]) -> None:
    currency, amount = _hold(order)
    state.balances[currency] += amount


def _amount(p: Mapping[str, str], name: str, code: str) -> Decimal:
    try:
        value = Decimal(p[name])
    except (KeyError, InvalidOperation):
        raise _order_error(code, f"POST parameter(s) is malformed: {name}.") from None
    if not value.is_finite() or value <= 0:
        raise _order_error(code, f"POST parameter(s) is malformed: {name}.")
    return value


def _place(state: BitstampState, side: str, kind: str, pair: str,
           p: dict[str, str]) -> dict[str, Any]:
    if pair not in PAIRS:
        raise _Reject({"status": "error", "reason": "Not found"}, 404)
    coid = p.get("client_order_id")
    if coid is not None and not re.fullmatch(r"[A-Za-z0-9_\-]{1,180}", coid):
        raise _order_error("400.008", "Invalid client_order_id.")
    if coid is not None and any(o["client_order_id"] == coid for o in state.orders.values()):
        raise _order_error("400.019", "Provided client_order_id already exists.")
    base, quote = PAIRS[pair][0].lower(), PAIRS[pair][1].lower()
    ref = PAIRS[pair][2]
    amount = _amount(p, "amount", "400.026")
    price = _amount(p, "price", "400.021") if kind == "limit" else ref
    quote_sized = kind == "instant" and (side == "buy" or p.get("amount_in_counter") == "True")
    base_qty = amount / ref if quote_sized else amount
    spend_cur, spend = (quote, base_qty * price) if side == "buy" else (base, base_qty)
    if state.balances.get(spend_cur, Decimal(0)) < spend:
        raise _order_error("400.009", "Insufficient balance for provided user.")
    state.balances[spend_cur] -= spend
    open_order = kind == "limit"
    if not open_order:
        gain_cur, gain = (base, base_qty) if side == "buy" else (quote, base_qty * price)
        state.balances[gain_cur] = state.balances.get(gain_cur, Decimal(0)) + gain
    order_id = str(next(state._ids))
    order = {
        "id": order_id, "datetime": datetime.fromtimestamp(state.clock(), UTC).strftime(
            "%Y-%m-%d %H:%M:%S.%f"), "type": "0" if side == "buy" else "1",
        "price": f"{price:f}", "amount": f"{base_qty:f}", "amount_at_create": f"{base_qty:f}",
        "currency_pair": f"{base.upper()}/{quote.upper()}", "market": f"{base.upper()}/"
        f"{quote.upper()}", "client_order_id": coid or "", "pair": pair,
        "status": "Open" if open_order else "Finished",
    }
    state.orders[order_id] = order
    if open_order:
        order_event(state, order, "order_created")
    return {k: order[k] for k in ("id", "datetime", "type", "price", "amount", "market",
                                  "client_order_id")}


def _find(state: BitstampState, p: Mapping[str, str]) -> dict[str, Any]:
    oid, coid = p.get("id"), p.get("client_order_id")
    if oid is None and coid is None:
        raise _order_error("400.014", "POST parameter(s) is missing from request: order_id.")
    for o in state.orders.values():
        if (oid is not None and o["id"] == oid) or (oid is None and o["client_order_id"] == coid):
            return o
    raise _order_error("404.002", "Order not found.")


def order_notional(symbol: str, quantity: Decimal, price: Decimal) -> Decimal:
    """What an order is worth in quote units: this exchange trades spot here, where
    ``amount`` counts base units."""
    return quantity * price
