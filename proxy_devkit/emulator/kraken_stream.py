"""Kraken's authenticated WebSocket v2 ``/v2``, strictly: on connect a ``status`` message; then
``subscribe`` to ``executions`` or ``balances`` with ``params.token``, a token the REST
``GetWebSocketsToken`` issued to a key of this account within the last 15 minutes (Kraken: a
token is to be used within 15 minutes; once a private subscription is made with it, it does not
expire on that connection); ``ping`` answered with ``pong``; any other method refused. Order
changes made over REST are pushed on ``executions`` as ``update`` messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy_devkit.emulator.streams import Subscriber

if TYPE_CHECKING:
    from proxy_devkit.emulator.kraken import KrakenState

TOKEN_VALID_S = 15 * 60
PRIVATE = frozenset({"executions", "balances"})


def _now_text(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}Z"


async def private_stream(state: KrakenState, ws: WebSocket) -> None:
    await ws.accept()
    state.streams.loop = asyncio.get_running_loop()
    sub: Subscriber | None = None
    pusher: asyncio.Task[None] | None = None

    async def answer(method: str, req: Any, result: Any = None, error: str | None = None) -> None:
        now = _now_text(state.clock())
        body: dict[str, Any] = {"method": method, "success": error is None, "time_in": now, "time_out": now}
        if error is not None:
            body["error"] = error
        elif result is not None:
            body["result"] = result
        await ws.send_text(json.dumps({**body, **({"req_id": req} if req is not None else {})}))

    status = {"version": "2.0.0", "system": "online", "api_version": "v2",
              "connection_id": uuid.uuid4().int >> 65}
    await ws.send_text(json.dumps({"channel": "status", "type": "update", "data": [status]}))
    try:
        while True:
            try:
                message = json.loads(await ws.receive_text())
            except ValueError:
                await answer("", None, error="EGeneral:Invalid arguments")
                continue
            state.streams.record(message)
            method = message.get("method") if isinstance(message, dict) else None
            req = message.get("req_id") if isinstance(message, dict) else None
            params = message.get("params") if isinstance(message, dict) else None
            if method == "ping":
                now = _now_text(state.clock())
                await ws.send_text(json.dumps({"method": "pong", "time_in": now, "time_out": now,
                                               **({"req_id": req} if req is not None else {})}))
            elif method in ("subscribe", "unsubscribe") and isinstance(params, dict):
                channel = params.get("channel")
                if channel not in PRIVATE:
                    await answer(method, req, error="EGeneral:Invalid arguments")
                    continue
                api_key = _token_key(state, params.get("token"))
                if api_key is None:
                    await answer(method, req, error="ESession:Invalid session")
                    continue
                if sub is None:
                    sub = Subscriber(api_key)
                    state.streams.subscribers.append(sub)
                    pusher = asyncio.create_task(_push(ws, sub))
                (sub.topics.add if method == "subscribe" else sub.topics.discard)(channel)
                await answer(method, req, {"channel": channel, "snapshot": True})
                if method == "subscribe" and channel == "executions" and params.get("snap_orders", True):
                    open_orders = [_execution(state, t, o, "new") for t, o in state.orders.items()
                                   if o["status"] == "open"]
                    await ws.send_text(json.dumps({"channel": "executions", "type": "snapshot",
                                                   "data": open_orders, "sequence": 1}))
            else:
                await answer(str(method or ""), req, error="EGeneral:Invalid arguments")
    except WebSocketDisconnect:
        pass
    finally:
        if sub is not None:
            state.streams.subscribers.remove(sub)
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher


def _token_key(state: KrakenState, token: Any) -> str | None:
    """The key a token was issued to, if it is one and still valid."""
    issued = state.ws_tokens.get(token) if isinstance(token, str) else None
    if issued is None or state.clock() - issued[1] > TOKEN_VALID_S:
        return None
    return issued[0]


async def _push(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        await ws.send_text(json.dumps(await sub.queue.get()))


def _execution(state: KrakenState, txid: str, order: dict[str, Any], exec_type: str) -> dict[str, Any]:
    from proxy_devkit.emulator.kraken import PAIRS, _resolve

    wsname = PAIRS[_resolve(order["descr"]["pair"])][1].replace("XBT", "BTC")  # v2 names BTC
    return {
        "order_id": txid, "symbol": wsname, "order_qty": float(order["vol"]),
        "cum_cost": float(order["cost"]), "time_in_force": "GTC", "exec_type": exec_type,
        "side": order["descr"]["type"], "order_type": order["descr"]["ordertype"],
        "order_userref": order["userref"], "limit_price": float(order["descr"]["price"]),
        "order_status": order["status"] if order["status"] != "open" else "new",
        "timestamp": _now_text(state.clock()),
        **({"cl_ord_id": order["cl_ord_id"]} if "cl_ord_id" in order else {}),
    }


def order_event(state: KrakenState, txid: str, exec_type: str) -> None:
    """Push an order's new state on ``executions`` (``exec_type``: new, canceled, trade)."""
    state.streams.publish("executions", {"channel": "executions", "type": "update",
                                         "data": [_execution(state, txid, state.orders[txid], exec_type)],
                                         "sequence": 2})
