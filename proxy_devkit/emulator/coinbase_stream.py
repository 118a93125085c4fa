"""Coinbase Advanced Trade's user stream, strictly: no login message; every ``subscribe`` to a
private channel (``user``, ``futures_balance_summary``) carries a CDP JWT as Coinbase checks it
(signed by the key in ``kid``, no ``uri``, valid now, a fresh nonce). Order changes made over
REST are pushed on ``user`` as ``{"channel": "user", "events": [{"type": "update", "orders"}]}``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy_devkit.emulator.coinbase_jwt import verify_token
from proxy_devkit.emulator.streams import Subscriber

if TYPE_CHECKING:
    from proxy_devkit.emulator.coinbase import CoinbaseState

PRIVATE = frozenset({"user", "futures_balance_summary"})
PUBLIC_KEEPALIVE = "heartbeats"


async def user_stream(state: CoinbaseState, ws: WebSocket) -> None:
    await ws.accept()
    state.streams.loop = asyncio.get_running_loop()
    sub = Subscriber("")
    state.streams.subscribers.append(sub)
    pusher = asyncio.create_task(_push(ws, sub))
    try:
        while True:
            try:
                message = json.loads(await ws.receive_text())
            except ValueError:
                await _send(ws, {"type": "error", "message": "failure to parse the message"})
                continue
            state.streams.record(message)
            kind = message.get("type") if isinstance(message, dict) else None
            channel = message.get("channel") if isinstance(message, dict) else None
            if kind not in ("subscribe", "unsubscribe") or not isinstance(channel, str):
                await _send(ws, {"type": "error", "message": "type and channel are required"})
                continue
            if channel in PRIVATE:
                token = message.get("jwt")
                reason = verify_token(state, token, None) if isinstance(token, str) else "jwt missing"
                if reason is not None:
                    await _send(ws, {"type": "error", "message": f"authentication failure: {reason}"})
                    continue
            elif channel != PUBLIC_KEEPALIVE:
                await _send(ws, {"type": "error", "message": f"the user endpoint has no channel {channel}"})
                continue
            (sub.topics.add if kind == "subscribe" else sub.topics.discard)(channel)
            subscriptions: dict[str, list[str]] = {c: [] for c in sorted(sub.topics)}
            await _send(ws, {"channel": "subscriptions", "client_id": "", "timestamp": _now(state),
                             "sequence_num": 0, "events": [{"subscriptions": subscriptions}]})
    except WebSocketDisconnect:
        pass
    finally:
        state.streams.subscribers.remove(sub)
        pusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pusher


async def _send(ws: WebSocket, message: Any) -> None:
    await ws.send_text(json.dumps(message))


async def _push(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        await _send(ws, await sub.queue.get())


def _now(state: CoinbaseState) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.now()))


def order_event(state: CoinbaseState, order: dict[str, Any]) -> None:
    """Push an order's new state on ``user``, in the stream's own order shape."""
    config: dict[str, Any] = next(iter(order["order_configuration"].values()), {})
    shown = {
        "order_id": order["order_id"], "client_order_id": order["client_order_id"],
        "product_id": order["product_id"], "order_side": order["side"], "status": order["status"],
        "order_type": str(order["order_type"]).title(), "creation_time": order["created_time"],
        "limit_price": config.get("limit_price", ""), "base_size": config.get("base_size", ""),
        "cumulative_quantity": order["filled_size"], "leaves_quantity": "0" if order["status"] != "OPEN"
        else config.get("base_size", ""), "avg_price": order["average_filled_price"],
        "total_fees": order["total_fees"], "product_type": "SPOT", "time_in_force": order["time_in_force"],
    }
    state.streams.publish("user", {"channel": "user", "client_id": "", "timestamp": _now(state),
                                   "sequence_num": 0, "events": [{"type": "update", "orders": [shown]}]})
