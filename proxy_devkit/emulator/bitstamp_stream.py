"""Bitstamp's WebSocket v2 ``/``, its private part, strictly: ``bts:subscribe`` to
``private-my_orders_{pair}-{user_id}`` or ``private-my_trades_{pair}-{user_id}`` with ``data.auth``
a token the REST ``websockets_token`` issued within its ``valid_sec`` (60 s), for this user;
``bts:heartbeat`` answered; anything else a ``bts:error``. Orders placed or cancelled over REST
are pushed as ``order_created`` / ``order_deleted`` on ``private-my_orders_{pair}-{user_id}``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy_devkit.emulator.streams import Subscriber

if TYPE_CHECKING:
    from proxy_devkit.emulator.bitstamp import BitstampState

USER_ID = 4848701
TOKEN_VALID_S = 60
_PRIVATE = re.compile(r"private-(my_orders|my_trades)_([a-z0-9]+)-([0-9]+)")


async def private_stream(state: BitstampState, ws: WebSocket) -> None:
    await ws.accept()
    state.streams.loop = asyncio.get_running_loop()
    sub: Subscriber | None = None
    pusher: asyncio.Task[None] | None = None

    async def error(message: str) -> None:
        await ws.send_text(json.dumps({"event": "bts:error", "channel": "",
                                       "data": {"code": None, "message": message}}))

    try:
        while True:
            try:
                message = json.loads(await ws.receive_text())
            except ValueError:
                await error("Bad request.")
                continue
            state.streams.record(message)
            event = message.get("event") if isinstance(message, dict) else None
            data = message.get("data") if isinstance(message, dict) else None
            if event == "bts:heartbeat":
                await ws.send_text(json.dumps({"event": "bts:heartbeat", "channel": "",
                                               "data": {"status": "success"}}))
            elif event in ("bts:subscribe", "bts:unsubscribe") and isinstance(data, dict):
                channel = data.get("channel")
                private = _PRIVATE.fullmatch(channel) if isinstance(channel, str) else None
                if private is None or int(private.group(3)) != USER_ID:
                    await error("Bad subscription string.")
                    continue
                if event == "bts:subscribe" and not _valid_token(state, data.get("auth")):
                    await error("Invalid signature.")
                    continue
                if sub is None:
                    sub = Subscriber(str(USER_ID))
                    state.streams.subscribers.append(sub)
                    pusher = asyncio.create_task(_push(ws, sub))
                (sub.topics.add if event == "bts:subscribe" else sub.topics.discard)(str(channel))
                done = "bts:subscription_succeeded" if event == "bts:subscribe" \
                    else "bts:unsubscription_succeeded"
                await ws.send_text(json.dumps({"event": done, "channel": channel, "data": {}}))
            else:
                await error("Bad request.")
    except WebSocketDisconnect:
        pass
    finally:
        if sub is not None:
            state.streams.subscribers.remove(sub)
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher


def _valid_token(state: BitstampState, token: Any) -> bool:
    issued = state.ws_tokens.get(token) if isinstance(token, str) else None
    return issued is not None and state.clock() - issued <= TOKEN_VALID_S


async def _push(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        await ws.send_text(json.dumps(await sub.queue.get()))


def order_event(state: BitstampState, order: dict[str, Any], event: str) -> None:
    """Push ``order_created`` or ``order_deleted`` for ``order`` on its pair's my_orders channel."""
    now = state.clock()
    channel = f"private-my_orders_{order['pair']}-{USER_ID}"
    state.streams.publish(channel, {"event": event, "channel": channel, "data": {
        "id": int(order["id"]), "id_str": order["id"], "order_type": int(order["type"]),
        "order_subtype": 0, "datetime": str(int(now)), "microtimestamp": str(int(now * 1e6)),
        "amount": float(order["amount"]), "amount_str": order["amount"],
        "amount_traded": "0", "amount_at_create": order["amount_at_create"],
        "price": float(order["price"]), "price_str": order["price"],
        "client_order_id": order["client_order_id"]}})
