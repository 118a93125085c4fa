"""A strict Deribit emulator (docs/exchanges.md §9), independent of the proxy's signer.

Checks, as Deribit documents for "Deribit Signature Credentials (HTTP REST)": the header
``deri-hmac-sha256 id=..,ts=..,sig=..,nonce=..`` (fields in any order), a known client id
(13004 invalid_credentials), ``ts`` no older than 60 s and not in the future beyond 1 s,
the nonce single use per key, and ``sig`` = hex HMAC-SHA256 over
``ts\\nnonce\\nMETHOD\\nURI\\nBody\\n`` with the path, query and body exactly as received (13009
unauthorized, HTTP 401). Answers in JSON-RPC envelopes with Deribit's ``usIn/usOut/usDiff``.
Keeps an in-memory account: summaries, buy/sell, order state, open orders, cancel. Labels are
not unique at Deribit, so a repeated label is accepted, as the exchange does.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from proxy_devkit.emulator.deribit_stream import order_event, private_stream
from proxy_devkit.emulator.recorder import Received
from proxy_devkit.emulator.state import EmulatorState

TS_WINDOW_MS = 60_000
FUTURE_SKEW_MS = 1_000


@dataclass(frozen=True)
class Instrument:
    name: str
    base: str
    counter: str
    settlement: str
    contract_size: Decimal
    min_trade: Decimal
    tick: Decimal
    mark: Decimal

    @property
    def inverse(self) -> bool:
        return self.counter != self.settlement


INSTRUMENTS = {
    i.name: i for i in (
        Instrument("BTC-PERPETUAL", "BTC", "USD", "BTC", Decimal(10), Decimal(10),
                   Decimal("0.5"), Decimal(50000)),
        Instrument("ETH-PERPETUAL", "ETH", "USD", "ETH", Decimal(1), Decimal(1),
                   Decimal("0.05"), Decimal(3000)),
        Instrument("BTC_USDC-PERPETUAL", "BTC", "USDC", "USDC", Decimal("0.001"),
                   Decimal("0.001"), Decimal(1), Decimal(50000)),
    )
}


@dataclass
class DeribitState(EmulatorState):
    secrets: dict[str, str] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(default_factory=lambda: {
        "BTC": Decimal(2), "ETH": Decimal(20), "USDC": Decimal(100000)})
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    nonces: dict[tuple[str, str], int] = field(default_factory=dict)
    testnet: bool = True
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))


class _Reject(Exception):
    def __init__(self, status: int, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.reason = status, code, message, reason


def _unauthorized(reason: str) -> _Reject:
    return _Reject(401, 13009, "unauthorized", reason)


def _invalid(param: str, reason: str) -> _Reject:
    return _Reject(400, -32602, "Invalid params", f"{param}: {reason}")


def create(keys: Mapping[str, Mapping[str, str]]) -> tuple[DeribitState, Starlette]:
    """An emulator knowing ``keys``: client id -> Vault-style fields (``api_secret``)."""
    state = DeribitState()
    for client_id, fields in keys.items():
        state.secrets[client_id] = fields["api_secret"]
    return state, create_app(state)


def create_app(state: DeribitState) -> Starlette:
    """The emulator's ASGI app over ``state``."""

    async def handle(request: Request) -> JSONResponse:
        us_in = int(state.clock() * 1_000_000) + state.skew_ms * 1000
        body = await request.body()
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        headers = tuple(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]
        )
        envelope: dict[str, Any] = {"jsonrpc": "2.0"}
        try:
            result = _dispatch(state, request, raw_path, raw_query, body)
        except _Reject as rej:
            state.recorder.add(Received(request.method, raw_path, raw_query, headers, body, False,
                                        f"{rej.code} {rej.reason}"))
            envelope["error"] = {"message": rej.message, "code": rej.code}
            if rej.reason:
                envelope["error"]["data"] = {"reason": rej.reason}
            status = rej.status
        else:
            state.recorder.add(Received(request.method, raw_path, raw_query, headers, body, True))
            envelope["result"] = result
            status = 200
        us_out = int(state.clock() * 1_000_000) + state.skew_ms * 1000
        envelope.update(usIn=us_in, usOut=us_out, usDiff=us_out - us_in, testnet=state.testnet)
        return JSONResponse(envelope, status_code=status)

    async def stream(ws: WebSocket) -> None:
        await private_stream(state, ws)

    return Starlette(
        routes=[WebSocketRoute("/ws/api/v2", stream),
                Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE"])]
    )


def _dispatch(
    state: DeribitState, request: Request, raw_path: str, raw_query: str, body: bytes
) -> Any:
    params = dict(request.query_params)
    if raw_path.startswith("/api/v2/public/") and request.method == "GET":
        return _public(state, raw_path.removeprefix("/api/v2/public/"), params)
    if not raw_path.startswith("/api/v2/private/"):
        raise _Reject(404, 11050, "bad_request", "unknown path")
    client_id = _authenticate(state, request, raw_path, raw_query, body)
    with state.lock:
        return _private(state, client_id, raw_path.removeprefix("/api/v2/private/"), params)


def _authenticate(
    state: DeribitState, request: Request, raw_path: str, raw_query: str, body: bytes
) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, rest = header.partition(" ")
    if scheme != "deri-hmac-sha256":
        raise _unauthorized("missing or unsupported authorization")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key in fields:
            raise _unauthorized("malformed authorization header")
        fields[key] = value
    if set(fields) != {"id", "ts", "sig", "nonce"} or not fields["ts"].isdigit():
        raise _unauthorized("authorization needs id, ts, sig and nonce")
    secret = state.secrets.get(fields["id"])
    if secret is None:
        raise _Reject(401, 13004, "invalid_credentials", "unknown client id")
    uri = f"{raw_path}?{raw_query}" if raw_query else raw_path
    string = f"{fields['ts']}\n{fields['nonce']}\n{request.method}\n{uri}\n".encode()
    expected = hmac.new(secret.encode(), string + body + b"\n", hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["sig"]):
        raise _unauthorized("bad signature")
    ts, now = int(fields["ts"]), state.now_ms()
    if now - ts > TS_WINDOW_MS or ts - now > FUTURE_SKEW_MS:
        raise _unauthorized("timestamp outside the 60 s window")
    with state.lock:
        for seen, at in list(state.nonces.items()):
            if now - at > TS_WINDOW_MS + FUTURE_SKEW_MS:
                del state.nonces[seen]
        if (fields["id"], fields["nonce"]) in state.nonces:
            raise _unauthorized("nonce already used")
        state.nonces[(fields["id"], fields["nonce"])] = ts
    return fields["id"]


def _instrument_json(i: Instrument, now_ms: int) -> dict[str, Any]:
    return {
        "instrument_name": i.name, "instrument_id": sorted(INSTRUMENTS).index(i.name) + 1,
        "kind": "future", "settlement_period": "perpetual", "is_active": True,
        "base_currency": i.base, "counter_currency": i.counter, "quote_currency": i.counter,
        "settlement_currency": i.settlement, "contract_size": float(i.contract_size),
        "min_trade_amount": float(i.min_trade), "tick_size": float(i.tick),
        "maker_commission": 0.0, "taker_commission": 0.0005, "creation_timestamp": now_ms - 1,
        "expiration_timestamp": 32503680000000, "instrument_type": "reversed" if i.inverse
        else "linear", "price_index": f"{i.base.lower()}_usd", "rfq": False, "max_leverage": 50,
        "block_trade_commission": 0.00025, "block_trade_min_trade_amount": 200000,
        "block_trade_tick_size": 0.01, "tick_size_steps": [],
    }


def order_notional(name: str, amount: Decimal, price: Decimal) -> Decimal:
    """What an order is worth in USD, from this emulator's own table (DRB-DOC amount: USD on
    inverse instruments, the base coin on linear ones)."""
    inst = INSTRUMENTS[name]
    return amount if inst.inverse else amount * price


def _public(state: DeribitState, method: str, p: Mapping[str, str]) -> Any:
    now = state.now_ms()
    if method == "get_time":
        return now
    if method == "test":
        return {"version": "1.2.26"}
    if method == "get_currencies":
        return [{"currency": c, "currency_long": c, "fee_precision": 4, "min_confirmations": 1,
                 "min_withdrawal_fee": 0.0001, "withdrawal_fee": 0.0001,
                 "withdrawal_priorities": [], "coin_type": "BITCOIN" if c == "BTC" else c}
                for c in ("BTC", "ETH", "USDC")]
    if method == "get_instruments":
        currency = p.get("currency", "any")
        return [_instrument_json(i, now) for i in INSTRUMENTS.values()
                if currency in ("any", i.base, i.settlement)]
    if method == "get_instrument":
        inst = INSTRUMENTS.get(p.get("instrument_name", ""))
        if inst is None:
            raise _invalid("instrument_name", "unknown instrument")
        return _instrument_json(inst, now)
    if method == "ticker":
        inst = INSTRUMENTS.get(p.get("instrument_name", ""))
        if inst is None:
            raise _invalid("instrument_name", "unknown instrument")
        return {"instrument_name": inst.name, "timestamp": now, "mark_price": float(inst.mark),
                "last_price": float(inst.mark), "best_bid_price": float(inst.mark - inst.tick),
                "best_ask_price": float(inst.mark + inst.tick), "state": "open"}
    raise _Reject(400, 11050, "bad_request", f"public/{method} is not emulated")


def _order_json(order: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if not k.startswith("_")}


def _private(state: DeribitState, client_id: str, method: str, p: Mapping[str, str]) -> Any:
    if method == "get_account_summaries":
        return {"id": 1, "email": "emulator@example.com", "system_name": client_id,
                "username": "emulator", "type": "main",
                "summaries": [_summary(state, c) for c in sorted(state.balances)]}
    if method == "get_account_summary":
        currency = p.get("currency", "")
        if currency not in state.balances:
            raise _invalid("currency", "must be one of BTC, ETH, USDC")
        return _summary(state, currency)
    if method in ("buy", "sell"):
        return _place(state, method, p)
    if method in ("get_order_state", "cancel"):
        order = state.orders.get(p.get("order_id", ""))
        if order is None:
            raise _Reject(400, 10004, "order_not_found")
        if method == "cancel":
            if order["order_state"] != "open":
                raise _Reject(400, 11044, "not_open_order")
            order["order_state"] = "cancelled"
            order["last_update_timestamp"] = state.now_ms()
            order_event(state, order, "future", order["_currency"])
        return _order_json(order)
    if method == "get_order_state_by_label":
        wanted, label = p.get("currency"), p.get("label")
        if wanted not in state.balances:
            raise _invalid("currency", "must be one of BTC, ETH, USDC")
        return [_order_json(o) for o in state.orders.values()
                if o["_currency"] == wanted and o["label"] == label]
    if method.startswith("get_open_orders"):
        wanted, instrument = p.get("currency"), p.get("instrument_name")
        return [_order_json(o) for o in state.orders.values() if o["order_state"] == "open"
                and (wanted is None or o["_currency"] == wanted)
                and (instrument is None or o["instrument_name"] == instrument)]
    if method == "withdraw":  # a canary: the proxy must never let this through
        return {"id": 1, "state": "unconfirmed", "currency": p.get("currency")}
    raise _Reject(400, 11050, "bad_request", f"private/{method} is not emulated")


def _summary(state: DeribitState, currency: str) -> dict[str, Any]:
    equity = state.balances[currency]
    margin = sum((o["_margin"] for o in state.orders.values()
                  if o["order_state"] == "open" and o["_currency"] == currency), Decimal(0))
    return {
        "currency": currency, "balance": float(equity), "equity": float(equity),
        "available_funds": float(equity - margin), "available_withdrawal_funds": float(equity),
        "initial_margin": float(margin), "maintenance_margin": 0.0, "margin_balance":
        float(equity), "total_pl": 0.0, "session_rpl": 0.0, "session_upl": 0.0,
        "delta_total": 0.0, "options_value": 0.0, "futures_pl": 0.0, "fee_balance": 0.0,
    }


def _decimal(p: Mapping[str, str], name: str) -> Decimal:
    try:
        value = Decimal(p[name])
    except (KeyError, InvalidOperation):
        raise _invalid(name, "must be a number") from None
    if not value.is_finite() or value <= 0:
        raise _invalid(name, "must be positive")
    return value


def _place(state: DeribitState, direction: str, p: Mapping[str, str]) -> dict[str, Any]:
    inst = INSTRUMENTS.get(p.get("instrument_name", ""))
    if inst is None:
        raise _invalid("instrument_name", "unknown instrument")
    amount = _decimal(p, "amount")
    if amount % inst.contract_size:
        raise _invalid("amount", f"must be a multiple of contract size {inst.contract_size}")
    otype = p.get("type", "limit")
    if otype not in ("limit", "market"):
        raise _invalid("type", "only limit and market are emulated")
    price = _decimal(p, "price") if otype == "limit" else inst.mark
    if otype == "limit" and price % inst.tick:
        raise _invalid("price", f"must be a multiple of tick size {inst.tick}")
    label = p.get("label", "")
    if len(label) > 64 or not all("\x20" < c < "\x7f" for c in label):
        raise _invalid("label", "at most 64 printable characters")
    margin = (amount / price if inst.inverse else amount * price) / 50
    available = state.balances[inst.settlement] - sum(
        (o["_margin"] for o in state.orders.values()
         if o["order_state"] == "open" and o["_currency"] == inst.settlement), Decimal(0))
    if margin > available:
        raise _Reject(400, 10009, "not_enough_funds")
    now = state.now_ms()
    filled = otype == "market"
    order_id = f"{inst.base}-{next(state._ids)}"
    order: dict[str, Any] = {
        "order_id": order_id, "order_state": "filled" if filled else
        "open", "order_type": otype, "direction": direction, "instrument_name": inst.name,
        "amount": float(amount), "filled_amount": float(amount) if filled else 0.0,
        "price": float(price) if otype == "limit" else "market_price",
        "average_price": float(price) if filled else 0.0, "label": label,
        "creation_timestamp": now, "last_update_timestamp": now,
        "time_in_force": p.get("time_in_force", "good_til_cancelled"),
        "post_only": p.get("post_only") == "true", "reduce_only": p.get("reduce_only") == "true",
        "reject_post_only": False, "api": True, "web": False, "max_show": float(amount),
        "is_liquidation": False, "replaced": False, "commission": 0.0, "risk_reducing": False,
        "contracts": float(amount / inst.contract_size), "mmp": False,
        "_currency": inst.settlement, "_margin": Decimal(0) if filled else margin,
    }
    state.orders[order_id] = order
    order_event(state, order, "future", inst.settlement)
    trades: list[dict[str, Any]] = []
    if filled:
        trades.append({"trade_id": f"T-{next(state._ids)}", "order_id": order_id,
                       "instrument_name": inst.name, "direction": direction,
                       "amount": float(amount), "price": float(price), "timestamp": now,
                       "fee": 0.0, "fee_currency": inst.settlement, "label": label})
    return {"order": _order_json(order), "trades": trades}
