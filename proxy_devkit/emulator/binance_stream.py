"""Binance spot's WebSocket API ``/ws-api/v3``, its user data stream part, strictly:
``userDataStream.subscribe.signature`` with ``apiKey``, ``timestamp`` (and optional
``recvWindow``) and a ``signature`` over the other parameters sorted by name as
``key=value&...`` (hex HMAC-SHA256, or base64 Ed25519/RSA), checked like REST (-2015 unknown
key, -1022 bad signature, -1021 timestamp); answered with a ``subscriptionId``. Order changes
made over REST are then pushed as ``{"subscriptionId", "event": {"e": "executionReport", ...}}``.
``ping`` and ``userDataStream.unsubscribe`` are answered; any other method gets an error."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy_devkit.emulator.streams import Subscriber

if TYPE_CHECKING:
    from proxy_devkit.emulator.binance import BinanceState

USER_DATA = "userData"
_RATE_LIMITS = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 6000, "count": 2}]


async def private_stream(state: BinanceState, ws: WebSocket) -> None:
    await ws.accept()
    state.streams.loop = asyncio.get_running_loop()
    subs: dict[int, Subscriber] = {}
    pushers: list[asyncio.Task[None]] = []
    ids = itertools.count(0)

    async def answer(ident: Any, result: Any = None, error: tuple[int, int, str] | None = None) -> None:
        body: dict[str, Any] = {"id": ident, "status": 200 if error is None else error[0]}
        if error is not None:
            body["error"] = {"code": error[1], "msg": error[2]}
        else:
            body["result"] = result
        await ws.send_text(json.dumps({**body, "rateLimits": _RATE_LIMITS}))

    try:
        while True:
            try:
                message = json.loads(await ws.receive_text())
            except ValueError:
                await answer(None, error=(400, -1000, "Invalid JSON"))
                continue
            state.streams.record(message)
            method = message.get("method") if isinstance(message, dict) else None
            ident = message.get("id") if isinstance(message, dict) else None
            params = message.get("params", {}) if isinstance(message, dict) else None
            if method == "ping":
                await answer(ident, {})
            elif method == "userDataStream.subscribe.signature":
                refused = _check(state, params)
                if refused is not None or not isinstance(params, dict):
                    await answer(ident, error=refused)
                    continue
                number = next(ids)
                sub = Subscriber(str(params["apiKey"]), {USER_DATA})
                subs[number] = sub
                state.streams.subscribers.append(sub)
                pushers.append(asyncio.create_task(_push(ws, sub, number)))
                await answer(ident, {"subscriptionId": number})
            elif method == "userDataStream.unsubscribe":
                wanted = params.get("subscriptionId") if isinstance(params, dict) else None
                for n in [n for n in subs if wanted is None or n == wanted]:
                    subs.pop(n).topics.clear()
                await answer(ident, {})
            else:
                await answer(ident, error=(400, -1020, "This operation is not supported."))
    except WebSocketDisconnect:
        pass
    finally:
        for sub in subs.values():
            state.streams.subscribers.remove(sub)
        for pusher in pushers:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher


def _check(state: BinanceState, params: Any) -> tuple[int, int, str] | None:
    """Binance's REST checks on a signed WebSocket API request; None when it passes."""
    from proxy_devkit.emulator.binance import _verify

    if not isinstance(params, dict) or not all(isinstance(params.get(k), str | int)
                                               for k in ("apiKey", "timestamp", "signature")):
        return 400, -1102, "Mandatory parameter was not sent, was empty/null, or malformed."
    key = state.keys.get(str(params["apiKey"]))
    if key is None:
        return 401, -2015, "Invalid API-key, IP, or permissions for action."
    payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")
    if not _verify(key, payload.encode(), str(params["signature"])):
        return 400, -1022, "Signature for this request is not valid."
    timestamp, server = int(params["timestamp"]), state.now_ms()
    if timestamp >= server + 1000 or server - timestamp > Decimal(str(params.get("recvWindow", 5000))):
        return 400, -1021, "Timestamp for this request is outside of the recvWindow."
    return None


async def _push(ws: WebSocket, sub: Subscriber, number: int) -> None:
    while True:
        event = await sub.queue.get()
        if USER_DATA in sub.topics:
            await ws.send_text(json.dumps({"subscriptionId": number, "event": event}))


def order_event(state: BinanceState, order: dict[str, Any], execution: str) -> None:
    """Push an ``executionReport`` for ``order`` (``execution``: NEW, CANCELED, TRADE)."""
    now = state.now_ms()
    canceled = execution == "CANCELED"
    state.streams.publish(USER_DATA, {
        "e": "executionReport", "E": now, "s": order["symbol"],
        "c": f"cancel{uuid.uuid4().hex[:12]}" if canceled else order["clientOrderId"],
        "S": order["side"], "o": order["type"], "f": order["timeInForce"], "q": order["origQty"],
        "p": order["price"], "P": "0.00000000", "F": "0.00000000", "g": -1,
        "C": order["clientOrderId"] if canceled else "", "x": execution, "X": order["status"],
        "r": "NONE", "i": order["orderId"], "l": "0.00000000", "z": order["executedQty"],
        "L": "0.00000000", "n": "0", "N": None, "T": now, "t": -1, "I": order["orderId"],
        "w": order["status"] == "NEW", "m": False, "M": False, "O": order["time"],
        "Z": order["cummulativeQuoteQty"], "Y": "0.00000000", "Q": "0.00000000",
        "W": order["workingTime"], "V": order["selfTradePreventionMode"],
    })
