"""OKX v5's private stream ``/ws/v5/private``, strictly: ``login`` first, with ``apiKey``,
``passphrase``, ``timestamp`` (seconds, within 30 s of the exchange's clock) and ``sign`` the
base64 HMAC-SHA256 of ``{timestamp}GET/users/self/verify``; then ``subscribe`` to private
channels and the text ``ping``. Order changes made over REST are pushed on ``orders``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import uuid
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy_devkit.emulator.streams import Subscriber

if TYPE_CHECKING:
    from proxy_devkit.emulator.okx import OkxState

PRIVATE_CHANNELS = {"account", "positions", "balance_and_position", "orders", "fills",
                    "liquidation-warning", "account-greeks"}


async def private_stream(state: OkxState, ws: WebSocket) -> None:
    await ws.accept()
    state.streams.loop = asyncio.get_running_loop()
    conn_id = uuid.uuid4().hex[:8]
    sub: Subscriber | None = None
    pusher: asyncio.Task[None] | None = None

    async def error(code: str, msg: str) -> None:
        await ws.send_text(json.dumps({"event": "error", "code": code, "msg": msg, "connId": conn_id}))

    try:
        while True:
            raw = await ws.receive_text()
            if raw == "ping":
                await ws.send_text("pong")
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                await error("60012", f"Illegal request: {raw[:100]}")
                continue
            state.streams.record(message)
            op = message.get("op") if isinstance(message, dict) else None
            if op == "login":
                key = _login(state, message.get("args"))
                if key is None:
                    await error("60009", "Login failed.")
                    continue
                sub = Subscriber(key)
                state.streams.subscribers.append(sub)
                pusher = asyncio.create_task(_push(ws, sub))
                await ws.send_text(json.dumps({"event": "login", "code": "0", "msg": "", "connId": conn_id}))
            elif op in ("subscribe", "unsubscribe"):
                args = message.get("args")
                if sub is None:
                    await error("60011", "Please log in")
                elif not isinstance(args, list) or not all(
                        isinstance(a, dict) and a.get("channel") in PRIVATE_CHANNELS for a in args):
                    await error("60018", f"Wrong URL or channel:{args} doesn't exist.")
                else:
                    for arg in args:
                        (sub.topics.add if op == "subscribe" else sub.topics.discard)(arg["channel"])
                        await ws.send_text(json.dumps({"event": op, "arg": arg, "connId": conn_id}))
            else:
                await error("60012", f"Illegal request: {raw[:100]}")
    except WebSocketDisconnect:
        pass
    finally:
        if sub is not None:
            state.streams.subscribers.remove(sub)
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher


def _login(state: OkxState, args: Any) -> str | None:
    if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], dict):
        return None
    arg = args[0]
    key = state.keys.get(str(arg.get("apiKey")))
    timestamp, sign = arg.get("timestamp"), arg.get("sign")
    if key is None or not isinstance(timestamp, str) or not timestamp.isdigit() or not isinstance(sign, str):
        return None
    if not hmac.compare_digest(key.passphrase.encode(), str(arg.get("passphrase")).encode()):
        return None
    if abs(int(timestamp) - state.now_ms() // 1000) > 30:
        return None
    expected = base64.b64encode(hmac.new(key.secret.encode(), f"{timestamp}GET/users/self/verify".encode(),
                                         hashlib.sha256).digest()).decode()
    return key.api_key if hmac.compare_digest(expected, sign) else None


async def _push(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        message = await sub.queue.get()
        await ws.send_text(json.dumps(message))


def order_event(state: OkxState, order: dict[str, Any]) -> None:
    """Push an order's new state on ``orders``, as OKX's private stream does."""
    data = {k: v for k, v in order.items() if not k.startswith("_")}
    state.streams.publish("orders", {"arg": {"channel": "orders", "instType": "ANY", "uid": "1"},
                                     "data": [data]})
