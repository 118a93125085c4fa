"""Bybit v5's private stream ``/v5/private``, strictly: ``auth`` must come first, with
``args = [api_key, expires, signature]``, ``expires`` (ms) in the future, and the signature a
lower-case hex HMAC-SHA256 (or base64 RSA) of ``GET/realtime{expires}``; then ``subscribe`` to
private topics and ``ping``. Order changes made over REST are pushed on ``order``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy_devkit.emulator.streams import Subscriber

if TYPE_CHECKING:
    from proxy_devkit.emulator.bybit import BybitState

PRIVATE_TOPICS = {"order", "stopOrder", "execution", "execution.fast", "position", "wallet", "greeks", "dcp"}


async def private_stream(state: BybitState, ws: WebSocket) -> None:
    from proxy_devkit.emulator.bybit import _verify

    await ws.accept()
    state.streams.loop = asyncio.get_running_loop()
    conn_id = str(uuid.uuid4())
    sub: Subscriber | None = None
    pusher: asyncio.Task[None] | None = None

    async def reply(**fields: Any) -> None:
        await ws.send_text(json.dumps({"conn_id": conn_id, **fields}))

    try:
        while True:
            try:
                message = json.loads(await ws.receive_text())
            except ValueError:
                await reply(success=False, ret_msg="error:request not json", op="")
                continue
            state.streams.record(message)
            op = message.get("op") if isinstance(message, dict) else None
            req = {"req_id": message["req_id"]} if isinstance(message, dict) and "req_id" in message else {}
            if op == "auth":
                args = message.get("args")
                key = state.keys.get(args[0]) if isinstance(args, list) and len(args) == 3 else None
                if key is None or not isinstance(args[1], str) or not args[1].isdigit() \
                        or not isinstance(args[2], str):
                    await reply(success=False, ret_msg="error:USVC1111", op="auth", **req)
                    continue
                if int(args[1]) <= state.now_ms():
                    await reply(success=False, ret_msg="Params Error:request expired", op="auth", **req)
                    continue
                if not _verify(key, f"GET/realtime{args[1]}".encode(), args[2]):
                    await reply(success=False, ret_msg="error:signature failed", op="auth", **req)
                    continue
                sub = Subscriber(key.api_key)
                state.streams.subscribers.append(sub)
                pusher = asyncio.create_task(_push(ws, sub))
                await reply(success=True, ret_msg="", op="auth", **req)
            elif op == "ping":
                await reply(success=True, ret_msg="pong", op="ping", **req)
            elif op in ("subscribe", "unsubscribe"):
                topics = message.get("args")
                if sub is None:
                    await reply(success=False, ret_msg="error:not authorized", op=op, **req)
                elif not isinstance(topics, list) or not all(t in PRIVATE_TOPICS for t in topics):
                    await reply(success=False, ret_msg=f"error:handler not found:{topics}", op=op, **req)
                else:
                    (sub.topics.update if op == "subscribe" else sub.topics.difference_update)(topics)
                    await reply(success=True, ret_msg="", op=op, **req)
            else:
                await reply(success=False, ret_msg=f"error:invalid op:{op}", op=op or "", **req)
    except WebSocketDisconnect:
        pass
    finally:
        if sub is not None:
            state.streams.subscribers.remove(sub)
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher


async def _push(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        message = await sub.queue.get()
        await ws.send_text(json.dumps(message))


def order_event(state: BybitState, order: dict[str, Any]) -> None:
    """Push an order's new state on ``order``, as Bybit's private stream does."""
    data = {k: v for k, v in order.items() if not k.startswith("_")}
    state.streams.publish("order", {"id": str(uuid.uuid4()), "topic": "order",
                                    "creationTime": state.now_ms(), "data": [data]})
