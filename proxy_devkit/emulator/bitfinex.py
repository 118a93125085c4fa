"""A strict Bitfinex v2 emulator (docs/exchanges.md §6), independent of the proxy's signer.

Checks, as Bitfinex documents: ``bfx-apikey`` (10100 "apikey: invalid"), ``bfx-signature`` =
hex(HMAC-SHA384(secret, "/api" + path + bfx-nonce + body)) over the exact body bytes received
(10100 "apikey: digest invalid"), and a ``bfx-nonce`` strictly above the last one accepted for
the key (10114 "nonce: small"). Errors are HTTP 500 ``["error", code, "message"]``. Keeps an
in-memory account: wallets, order submit/multi/cancel/cancel-multi, open and past orders; a
``cid`` already used that UTC day is refused (10001, exact text UNVERIFIED). Serves the
``conf`` labels ccxt's load_markets asks for.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from proxy_devkit.emulator.bitfinex_stream import order_event, private_stream
from proxy_devkit.emulator.recorder import Received
from proxy_devkit.emulator.state import EmulatorState

#: pair id (without the leading 't') -> reference price
PAIRS = {"BTCUSD": Decimal("50000"), "ETHUSD": Decimal("3000"), "TESTBTC:TESTUSD": Decimal("50000")}
CURRENCIES = ("BTC", "ETH", "USD", "TESTBTC", "TESTUSD")
FORBIDDEN = frozenset({"w/withdraw", "w/transfer", "w/ext/wallets/withdrawals/request"})


class _Reject(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class BitfinexState(EmulatorState):
    secrets: dict[str, str] = field(default_factory=dict)
    last_nonce: dict[str, int] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(default_factory=lambda: {
        "USD": Decimal("100000"), "BTC": Decimal("2"), "ETH": Decimal("10"),
        "TESTUSD": Decimal("100000"), "TESTBTC": Decimal("2"),
    })
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100000001))


def create(keys: Mapping[str, Mapping[str, str]]) -> tuple[BitfinexState, Starlette]:
    """An emulator knowing ``keys``: api_key -> Vault-style fields (``api_secret``)."""
    state = BitfinexState()
    for api_key, fields in keys.items():
        state.secrets[api_key] = fields["api_secret"]
    return state, create_app(state)


def create_app(state: BitfinexState) -> Starlette:
    async def handle(request: Request) -> JSONResponse:
        body = await request.body()
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        headers = tuple(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]
        )
        seen = Received(request.method, request.url.path, raw_query, headers, body, True)
        try:
            result = _dispatch(state, request, body)
        except _Reject as rej:
            state.recorder.add(replace(seen, accepted=False, error=str(rej.code)))
            return JSONResponse(["error", rej.code, rej.message], status_code=500)
        state.recorder.add(seen)
        return JSONResponse(result)

    async def stream(ws: WebSocket) -> None:
        await private_stream(state, ws)

    return Starlette(routes=[WebSocketRoute("/ws/2", stream),
                             Route("/{path:path}", handle, methods=["GET", "POST"])])


def _dispatch(state: BitfinexState, request: Request, body: bytes) -> Any:
    path = request.url.path
    if request.method == "GET":
        return _public(path, request.query_params.get("symbols", ""))
    if not path.startswith("/v2/auth/"):
        raise _Reject(10020, "request: invalid")
    params = _authenticate(state, path, body, request)
    with state.lock:
        return _private(state, path.removeprefix("/v2/auth/"), params)


def _authenticate(state: BitfinexState, path: str, body: bytes, request: Request) -> Any:
    api_key = request.headers.get("bfx-apikey", "")
    secret = state.secrets.get(api_key)
    if secret is None:
        raise _Reject(10100, "apikey: invalid")
    nonce = request.headers.get("bfx-nonce", "")
    signature = request.headers.get("bfx-signature", "")
    payload = f"/api{path}{nonce}".encode() + body
    expected = hmac.new(secret.encode(), payload, hashlib.sha384).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise _Reject(10100, "apikey: digest invalid")
    if not nonce.isdigit():
        raise _Reject(10114, "nonce: invalid")
    with state.lock:
        if int(nonce) <= state.last_nonce.get(api_key, 0):
            raise _Reject(10114, "nonce: small")
        state.last_nonce[api_key] = int(nonce)
    try:
        params = json.loads(body.decode("utf-8") or "{}", parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise _Reject(10020, "request: invalid") from None
    if not isinstance(params, dict):
        raise _Reject(10020, "request: invalid")
    return params


# ---------------------------------------------------------------- public

def _public(path: str, symbols: str) -> Any:
    if path == "/v2/platform/status":
        return [1]
    if path.startswith("/v2/conf/"):
        return [_conf(label) for label in path.removeprefix("/v2/conf/").split(",")]
    if path == "/v2/tickers":
        wanted = [s for s in symbols.split(",") if s] or [f"t{p}" for p in PAIRS]
        return [_ticker(s) for s in wanted if s[1:] in PAIRS]
    match = re.fullmatch(r"/v2/ticker/t(.+)", path)
    if match and match.group(1) in PAIRS:
        return _ticker(f"t{match.group(1)}")[1:]
    raise _Reject(10020, "request: invalid")


def _ticker(symbol: str) -> list[Any]:
    ref = float(PAIRS[symbol[1:]])
    return [symbol, ref, 1.0, ref, 1.0, 0.0, 0.0, ref, 100.0, ref, ref]


def _conf(label: str) -> list[Any]:
    info = [None, None, None, "0.00004", "2000.0", None, None, None, None, None, None, None]
    answers: dict[str, list[Any]] = {
        "pub:info:pair": [[pair, info] for pair in PAIRS],
        "pub:list:pair:margin": ["BTCUSD"],
        "pub:list:currency": list(CURRENCIES),
        "pub:map:currency:label": [[c, c.title()] for c in CURRENCIES],
        "pub:map:currency:sym": [],
    }
    return answers.get(label, [])


# ---------------------------------------------------------------- private

def _private(state: BitfinexState, name: str, p: dict[str, Any]) -> Any:
    now = state.now_ms()
    if name in FORBIDDEN:
        return [now, "acc_wd-req", None, None, [1], None, "SUCCESS", "REACHED"]  # never allowed
    if name == "r/wallets":
        return [["exchange", c, float(v), 0, float(v), None, None]
                for c, v in state.balances.items()]
    if name == "w/order/submit":
        order = _submit(state, p)
        return [now, "on-req", None, None, [order], None, "SUCCESS", "Submitting 1 orders."]
    if name == "w/order/multi":
        ops = p.get("ops")
        if not isinstance(ops, list) or not ops or any(op[0] != "on" for op in ops):
            raise _Reject(10020, "ops: invalid")
        notes = [[now, "on-req", None, None, [_submit(state, op[1])], None, "SUCCESS",
                  "Submitting 1 orders."] for op in ops]
        return [now, "ox_multi-req", None, None, notes, None, "SUCCESS",
                f"Submitting {len(ops)} order operations."]
    if name == "w/order/cancel":
        order = _cancel(state, _find(state, p))
        return [now, "oc-req", None, None, order, None, "SUCCESS",
                f"Submitted for cancellation; waiting for confirmation (ID: {order[0]})."]
    if name == "w/order/cancel/multi":
        if p.get("all") == 1:
            targets = [o for o in state.orders.values() if o["status"] == "ACTIVE"]
        else:
            targets = [_find(state, {"id": i}) for i in p.get("id", [])]
        arrays = [_cancel(state, o) for o in targets]
        return [now, "oc_multi-req", None, None, arrays, None, "SUCCESS",
                f"Submitting {len(arrays)} order cancellations."]
    match = re.fullmatch(r"r/orders(?:/(t[A-Z0-9:]+))?(/hist)?", name)
    if match:
        symbol, hist = match.group(1), match.group(2)
        ids = p.get("id")
        chosen = [o for o in state.orders.values()
                  if (o["status"] == "ACTIVE") != bool(hist)
                  and (symbol is None or o["symbol"] == symbol)
                  and (not ids or o["id"] in ids)]
        if hist:  # most recent first, ``limit`` of them (default 25, at most 2500)
            limit = p.get("limit", 25)
            if type(limit) is not int or not 0 < limit <= 2500:
                raise _Reject(10020, "limit: invalid")
            chosen = sorted(chosen, key=lambda o: o["id"], reverse=True)[:limit]
        return [_array(o) for o in chosen]
    raise _Reject(10020, "request: invalid")


def _decimal(value: Any, name: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _Reject(10020, f"{name}: invalid") from None
    if not number.is_finite():
        raise _Reject(10020, f"{name}: invalid")
    return number


def _submit(state: BitfinexState, p: Mapping[str, Any]) -> list[Any]:
    symbol, otype = str(p.get("symbol", "")), p.get("type")
    if not symbol.startswith("t") or symbol[1:] not in PAIRS:
        raise _Reject(10020, "symbol: invalid")
    if otype not in ("EXCHANGE LIMIT", "EXCHANGE MARKET"):
        raise _Reject(10020, "type: invalid")
    amount = _decimal(p.get("amount"), "amount")
    if amount == 0:
        raise _Reject(10020, "amount: invalid")
    cid = p.get("cid")
    if cid is not None and (type(cid) is not int or not 0 < cid < 2**45):
        raise _Reject(10020, "cid: invalid")  # an integer (int45 as ccxt and the docs use it)
    today = time.strftime("%Y-%m-%d", time.gmtime(state.clock()))
    if cid is not None and any(o["cid"] == cid and o["cid_date"] == today
                               for o in state.orders.values()):
        raise _Reject(10001, "Invalid order: duplicate cid")
    pair = symbol[1:]
    base, quote = pair.split(":") if ":" in pair else (pair[:3], pair[3:])
    price = _decimal(p.get("price"), "price") if otype == "EXCHANGE LIMIT" else PAIRS[pair]
    qty = abs(amount)
    spend_asset, spend = (quote, qty * price) if amount > 0 else (base, qty)
    if state.balances.get(spend_asset, Decimal(0)) < spend:
        raise _Reject(10001, f"Invalid order: not enough exchange balance for {amount} {symbol}")
    filled = otype == "EXCHANGE MARKET"
    if filled:
        state.balances[spend_asset] -= spend
        gain_asset, gain = (base, qty) if amount > 0 else (quote, qty * price)
        state.balances[gain_asset] = state.balances.get(gain_asset, Decimal(0)) + gain
    now = state.now_ms()
    order = {
        "id": next(state._ids), "cid": cid if cid is not None else now, "cid_date": today,
        "symbol": symbol, "created": now, "amount": Decimal(0) if filled else amount,
        "amount_orig": amount, "type": otype, "flags": p.get("flags", 0),
        "status": f"EXECUTED @ {price}({amount})" if filled else "ACTIVE",
        "price": price, "avg": price if filled else Decimal(0),
    }
    state.orders[order["id"]] = order
    order_event(state, "on", _array(order))
    return _array(order)


def _find(state: BitfinexState, p: Mapping[str, Any]) -> dict[str, Any]:
    for order in state.orders.values():
        if ("id" in p and order["id"] == p["id"]) or (
            "cid" in p and order["cid"] == p["cid"] and order["cid_date"] == p.get("cid_date")
        ):
            return order
    raise _Reject(10001, "Order not found.")


def _cancel(state: BitfinexState, order: dict[str, Any]) -> list[Any]:
    if order["status"] != "ACTIVE":
        raise _Reject(10001, "Order not found.")
    order["status"] = "CANCELED"
    order_event(state, "oc", _array(order))
    return _array(order)


def _array(o: Mapping[str, Any]) -> list[Any]:
    """The 32-field order array Bitfinex answers with."""
    return [
        o["id"], None, o["cid"], o["symbol"], o["created"], o["created"], float(o["amount"]),
        float(o["amount_orig"]), o["type"], None, None, None, o["flags"], o["status"], None,
        None, float(o["price"]), float(o["avg"]), 0, 0, None, None, None, 0, 0, None, None,
        None, "API>BFX", None, None, {},
    ]


def order_notional(symbol: str, quantity: Decimal, price: Decimal) -> Decimal:
    """What an order is worth in quote units: this exchange trades spot here, where
    ``amount`` counts base units."""
    return quantity * price
