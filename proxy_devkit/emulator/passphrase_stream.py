"""The private stream OKX and Bitget share, strictly: ``login`` first, with ``apiKey``,
``passphrase``, ``timestamp`` (seconds, within 30 s of the exchange's clock) and ``sign`` over
``{timestamp}GET{verify path}`` checked as the exchange checks REST signatures; then
``subscribe`` to private channels and the text ``ping``. Order changes made over REST are pushed
as ``{"arg": {"channel": "orders", ...}, "data": [order]}``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy_devkit.emulator.streams import StreamHub, Subscriber


class _Key(Protocol):
    api_key: str
    passphrase: str


class _State(Protocol):
    streams: StreamHub
    keys: Any

    def now_ms(self) -> int: ...


@dataclass(frozen=True)
class Spec:
    verify_path: str
    channels: frozenset[str]
    #: does ``sign`` sign ``message`` with ``key`` (the exchange's REST check)
    verify: Callable[[Any, bytes, str], bool]
    ok_code: str | int
    login_failed: tuple[str | int, str]
    not_logged_in: tuple[str | int, str]
    bad_channel: str | int
    illegal: str | int


async def private_stream(state: _State, spec: Spec, ws: WebSocket) -> None:
    await ws.accept()
    state.streams.loop = asyncio.get_running_loop()
    conn_id = uuid.uuid4().hex[:8]
    sub: Subscriber | None = None
    pusher: asyncio.Task[None] | None = None

    async def error(code: str | int, msg: str) -> None:
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
                await error(spec.illegal, f"Illegal request: {raw[:100]}")
                continue
            state.streams.record(message)
            op = message.get("op") if isinstance(message, dict) else None
            if op == "login":
                api_key = _login(state, spec, message.get("args"))
                if api_key is None:
                    await error(*spec.login_failed)
                    continue
                sub = Subscriber(api_key)
                state.streams.subscribers.append(sub)
                pusher = asyncio.create_task(_push(ws, sub))
                await ws.send_text(json.dumps({"event": "login", "code": spec.ok_code, "msg": "",
                                               "connId": conn_id}))
            elif op in ("subscribe", "unsubscribe"):
                args = message.get("args")
                if sub is None:
                    await error(*spec.not_logged_in)
                elif not isinstance(args, list) or not all(
                        isinstance(a, dict) and a.get("channel") in spec.channels for a in args):
                    await error(spec.bad_channel, f"channel:{args} doesn't exist")
                else:
                    for arg in args:
                        (sub.topics.add if op == "subscribe" else sub.topics.discard)(arg["channel"])
                        await ws.send_text(json.dumps({"event": op, "arg": arg, "connId": conn_id}))
            else:
                await error(spec.illegal, f"Illegal request: {raw[:100]}")
    except WebSocketDisconnect:
        pass
    finally:
        if sub is not None:
            state.streams.subscribers.remove(sub)
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher


def _login(state: _State, spec: Spec, args: Any) -> str | None:
    if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], dict):
        return None
    arg = args[0]
    key = state.keys.get(str(arg.get("apiKey")))
    timestamp, sign = arg.get("timestamp"), arg.get("sign")
    if key is None or not isinstance(timestamp, str) or not timestamp.isdigit() or not isinstance(sign, str):
        return None
    if key.passphrase != arg.get("passphrase") or abs(int(timestamp) - state.now_ms() // 1000) > 30:
        return None
    if not spec.verify(key, f"{timestamp}GET{spec.verify_path}".encode(), sign):
        return None
    return str(key.api_key)


async def _push(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        message = await sub.queue.get()
        await ws.send_text(json.dumps(message))


def order_event(hub: StreamHub, order: dict[str, Any], inst_type: str) -> None:
    """Push an order's new state on ``orders``."""
    data = {k: v for k, v in order.items() if not k.startswith("_")}
    hub.publish("orders", {"arg": {"channel": "orders", "instType": inst_type}, "data": [data]})
