"""Bybit v5 private stream (``/v5/private``): ``auth`` with ``GET/realtime{expires}`` signed like
REST (hex HMAC-SHA256, or base64 RSA), ``subscribe`` to private topics, ``ping``.

Order entry over the socket lives on a different path (``/v5/trade``), which the proxy does not
carry; any other ``op`` on the private stream is refused in Bybit's own format
``{"success": false, "ret_msg": ..., "op": ..., "req_id": ...}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials, Environment
from proxy.exchanges.streams import ForwardsSubscriptions, StreamKind, StreamMessage, parse_bot_message
from proxy.model.request import Stamp

#: how long the login signature is valid (Bybit's ``expires`` is a time in the future)
LOGIN_VALID_MS = 10_000
#: Bybit v5 private topics (all reads of the account's own state)
CHANNELS = frozenset({
    "order", "stopOrder", "execution", "execution.fast", "position", "wallet", "greeks", "dcp",
    "order.spot", "order.linear", "order.inverse", "order.option", "execution.spot",
    "execution.linear", "execution.inverse", "execution.option", "position.linear",
    "position.inverse", "position.option",
})


@dataclass(frozen=True)
class BybitStream(ForwardsSubscriptions):
    path: str = "/v5/private"
    channels: frozenset[str] = CHANNELS

    def url(self, environment: Environment) -> str:
        return {"live": "wss://stream.bybit.com", "testnet": "wss://stream-testnet.bybit.com"}[environment]

    def login(self, creds: Credentials, stamp: Stamp) -> str:
        expires = str(stamp.now_ms + LOGIN_VALID_MS)
        from proxy.exchanges.bybit import signature_for  # the package imports this module

        signature = signature_for(creds, f"GET/realtime{expires}".encode())
        return json.dumps({"op": "auth", "args": [creds.api_key, expires, signature]})

    def login_result(self, message: Any) -> bool | None:
        if not isinstance(message, dict) or message.get("op") != "auth":
            return None
        return message.get("success") is True

    def classify(self, raw: str) -> StreamMessage:
        message = parse_bot_message(raw)
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise BadRequest('a Bybit stream message is an object with "op"')
        op, req = message["op"], message.get("req_id")
        request_id = req if isinstance(req, str) else None
        if op == "auth":
            return StreamMessage(StreamKind.LOGIN, op, request_id=request_id)
        if op == "ping":
            return StreamMessage(StreamKind.PING, op, request_id=request_id)
        if op in ("subscribe", "unsubscribe"):
            args = message.get("args")
            if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
                raise BadRequest(f'"{op}" needs "args": a non-empty list of topic names')
            kind = StreamKind.SUBSCRIBE if op == "subscribe" else StreamKind.UNSUBSCRIBE
            return StreamMessage(kind, op, tuple(args), request_id)
        return StreamMessage(StreamKind.OTHER, op, request_id=request_id)

    def login_ack(self, message: StreamMessage) -> str:
        return json.dumps({"success": True, "ret_msg": "", "op": "auth", "conn_id": "signing-proxy",
                           **({"req_id": message.request_id} if message.request_id else {})})

    def refusal(self, message: StreamMessage, code: str, text: str) -> str:
        return json.dumps({"success": False, "ret_msg": f"error:{code}: {text}", "op": message.op,
                           "conn_id": "signing-proxy",
                           **({"req_id": message.request_id} if message.request_id else {})})


STREAM = BybitStream()
