"""Deribit's JSON-RPC stream ``/ws/api/v2``, strictly: ``public/auth`` with ``grant_type =
client_signature`` and the signature the hex HMAC-SHA256 of ``{timestamp}\\n{nonce}\\n{data}``
(timestamp within 60 s, a nonce never seen before), answered with access and refresh tokens;
then ``private/subscribe`` to ``user.*`` channels, and ``public/test``. Order changes made over
REST are pushed on the subscribed ``user.orders.*`` channels."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy_devkit.emulator.streams import Subscriber

if TYPE_CHECKING:
    from proxy_devkit.emulator.deribit import DeribitState

WINDOW_MS = 60_000


async def private_stream(state: DeribitState, ws: WebSocket) -> None:
    await ws.accept()
    state.streams.loop = asyncio.get_running_loop()
    sub: Subscriber | None = None
    pusher: asyncio.Task[None] | None = None

    async def answer(ident: Any, result: Any = None, error: tuple[int, str] | None = None) -> None:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "usIn": 0, "usOut": 0, "usDiff": 0,
                                "testnet": state.testnet}
        if error is not None:
            body["error"] = {"code": error[0], "message": error[1]}
        else:
            body["result"] = result
        await ws.send_text(json.dumps(body))

    try:
        while True:
            try:
                message = json.loads(await ws.receive_text())
            except ValueError:
                await answer(None, error=(11050, "bad_request"))
                continue
            state.streams.record(message)
            method = message.get("method") if isinstance(message, dict) else None
            ident = message.get("id") if isinstance(message, dict) else None
            params = message.get("params") if isinstance(message, dict) else None
            if method == "public/auth":
                client_id = _auth(state, params)
                if client_id is None:
                    await answer(ident, error=(13004, "invalid_credentials"))
                    continue
                sub = Subscriber(client_id)
                state.streams.subscribers.append(sub)
                pusher = asyncio.create_task(_push(ws, sub))
                tokens = {"access_token": secrets.token_hex(16), "refresh_token": secrets.token_hex(16)}
                await answer(ident, {**tokens, "expires_in": 900, "scope": "connection"})
            elif method == "public/test":
                await answer(ident, {"version": "1.2.26"})
            elif method in ("private/subscribe", "private/unsubscribe"):
                channels = params.get("channels") if isinstance(params, dict) else None
                if sub is None:
                    await answer(ident, error=(13009, "unauthorized"))
                elif not isinstance(channels, list) or not all(
                        isinstance(c, str) and c.startswith("user.") for c in channels):
                    await answer(ident, error=(11050, "bad_request"))
                else:
                    if method == "private/subscribe":
                        sub.topics.update(channels)
                    else:
                        sub.topics.difference_update(channels)
                    await answer(ident, channels)
            else:
                await answer(ident, error=(11050, "bad_request"))
    except WebSocketDisconnect:
        pass
    finally:
        if sub is not None:
            state.streams.subscribers.remove(sub)
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher


def _auth(state: DeribitState, params: Any) -> str | None:
    if not isinstance(params, dict) or params.get("grant_type") != "client_signature":
        return None
    client_id, ts, nonce = params.get("client_id"), params.get("timestamp"), params.get("nonce")
    signature, data = params.get("signature"), params.get("data", "")
    secret = state.secrets.get(str(client_id))
    if secret is None or type(ts) is not int or not isinstance(nonce, str) or not isinstance(signature, str):
        return None
    expected = hmac.new(secret.encode(), f"{ts}\n{nonce}\n{data}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature) or abs(state.now_ms() - ts) > WINDOW_MS:
        return None
    with state.lock:
        if (str(client_id), nonce) in state.nonces:
            return None
        state.nonces[(str(client_id), nonce)] = ts
    return str(client_id)


async def _push(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        message = await sub.queue.get()
        await ws.send_text(json.dumps(message))


def order_event(state: DeribitState, order: dict[str, Any], kind: str, currency: str) -> None:
    """Push an order on every subscribed ``user.orders.{kind|any}.{currency|any}.raw`` channel."""
    data = {k: v for k, v in order.items() if not k.startswith("_")}
    subs = list(state.streams.subscribers)
    channels = {c for sub in subs for c in sub.topics if _matches(c, kind, currency)}
    for channel in sorted(channels):
        state.streams.publish(channel, {"jsonrpc": "2.0", "method": "subscription",
                                        "params": {"channel": channel, "data": data}})


def _matches(channel: str, kind: str, currency: str) -> bool:
    parts = channel.split(".")
    return parts[:2] == ["user", "orders"] and len(parts) == 5 and parts[2] in (kind, "any") \
        and parts[3] in (currency, "any")
