"""Bitfinex v2's authenticated stream ``/ws/2``, strictly: ``auth`` with ``authPayload`` equal
to ``"AUTH" + authNonce``, ``authSig`` the hex HMAC-SHA384 of the payload, and the nonce strictly
above the last one the key used (REST and stream share it, as on the exchange). Then order
changes made over REST arrive on channel 0 as ``[0, "on"|"oc", order]``; ``ping`` is answered."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy_devkit.emulator.streams import Subscriber

if TYPE_CHECKING:
    from proxy_devkit.emulator.bitfinex import BitfinexState


async def private_stream(state: BitfinexState, ws: WebSocket) -> None:
    await ws.accept()
    state.streams.loop = asyncio.get_running_loop()
    await _send(ws, {"event": "info", "version": 2, "serverId": "emulator", "platform": {"status": 1}})
    sub: Subscriber | None = None
    pusher: asyncio.Task[None] | None = None
    try:
        while True:
            try:
                message = json.loads(await ws.receive_text())
            except ValueError:
                await ws.send_text(json.dumps({"event": "error", "msg": "invalid json", "code": 10000}))
                continue
            state.streams.record(message)
            event = message.get("event") if isinstance(message, dict) else None
            if event == "auth":
                api_key = _auth(state, message)
                if api_key is None:
                    await ws.send_text(json.dumps({"event": "auth", "status": "FAILED", "chanId": 0,
                                                   "code": 10100, "msg": "apikey: digest invalid"}))
                    continue
                sub = Subscriber(api_key, topics={"account"})
                state.streams.subscribers.append(sub)
                pusher = asyncio.create_task(_push(ws, sub))
                await _send(ws, {"event": "auth", "status": "OK", "chanId": 0, "userId": 1,
                                 "auth_id": "emulator", "caps": {"orders": {"read": 1, "write": 1}}})
                await ws.send_text(json.dumps([0, "os", []]))
            elif event == "ping":
                await _send(ws, {"event": "pong", "ts": state.now_ms(), "cid": message.get("cid")})
            else:
                await ws.send_text(json.dumps({"event": "error", "msg": "unsupported", "code": 10000}))
    except WebSocketDisconnect:
        pass
    finally:
        if sub is not None:
            state.streams.subscribers.remove(sub)
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher


def _auth(state: BitfinexState, message: dict[str, Any]) -> str | None:
    api_key, nonce = message.get("apiKey"), message.get("authNonce")
    payload, sig = message.get("authPayload"), message.get("authSig")
    secret = state.secrets.get(str(api_key))
    if secret is None or type(nonce) is not int or payload != f"AUTH{nonce}" or not isinstance(sig, str):
        return None
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha384).hexdigest()
    if not hmac.compare_digest(expected, sig):
        return None
    with state.lock:
        if nonce <= state.last_nonce.get(str(api_key), 0):
            return None
        state.last_nonce[str(api_key)] = nonce
    return str(api_key)


async def _send(ws: WebSocket, message: Any) -> None:
    await ws.send_text(json.dumps(message))


async def _push(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        message = await sub.queue.get()
        await ws.send_text(json.dumps(message["frame"]))


def order_event(state: BitfinexState, kind: str, order: list[Any]) -> None:
    """Push ``[0, kind, order]`` (``on`` new, ``oc`` cancelled) to authenticated sockets."""
    state.streams.publish("account", {"frame": [0, kind, order]})
