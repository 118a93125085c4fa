"""OKX v5 private stream (``/ws/v5/private``): ``login`` with ``{timestamp}GET/users/self/verify``
signed like REST (base64 HMAC-SHA256, timestamp in seconds), ``subscribe`` to private channels,
and the text ``ping``.

Order entry over the socket (``order``, ``batch-orders``, ``cancel-order``, ``amend-order``...)
is not carried: it is refused in OKX's own format ``{"id", "op", "code", "msg", "data": []}``, and
any other unknown message as ``{"event": "error", "code", "msg"}``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials, Environment
from proxy.exchanges.streams import StreamKind, StreamMessage, parse_bot_message
from proxy.model.request import Stamp
from proxy.model.signers import HmacKey

#: OKX v5 private channels on /ws/v5/private (reads of the account's own state)
CHANNELS = frozenset({
    "account", "positions", "balance_and_position", "liquidation-warning", "account-greeks",
    "orders", "fills",
})
#: OKX's code for a request it will not take (used for every refusal the proxy makes)
REFUSED_CODE = "60012"


@dataclass(frozen=True)
class OkxStream:
    path: str = "/ws/v5/private"
    channels: frozenset[str] = CHANNELS

    def url(self, environment: Environment) -> str:
        return {"live": "wss://ws.okx.com:8443", "testnet": "wss://wspap.okx.com:8443"}[environment]

    def login(self, creds: Credentials, stamp: Stamp) -> str:
        if not isinstance(creds.key, HmacKey) or creds.passphrase is None:
            raise TypeError("OKX signs with an HMAC key and a passphrase")
        timestamp = str(stamp.now_ms // 1000)
        sign = base64.b64encode(creds.key.digest(f"{timestamp}GET/users/self/verify".encode())).decode()
        return json.dumps({"op": "login", "args": [{
            "apiKey": creds.api_key, "passphrase": creds.passphrase.reveal(), "timestamp": timestamp,
            "sign": sign}]})

    def login_result(self, message: Any) -> bool | None:
        if not isinstance(message, dict):
            return None
        if message.get("event") == "login":
            return message.get("code") == "0"
        if message.get("event") == "error":
            return False
        return None

    def classify(self, raw: str) -> StreamMessage:
        if raw == "ping":
            return StreamMessage(StreamKind.PING, "ping")
        message = parse_bot_message(raw)
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise BadRequest('an OKX stream message is "ping" or an object with "op"')
        op, ident = message["op"], message.get("id")
        request_id = ident if isinstance(ident, str) else None
        if op == "login":
            return StreamMessage(StreamKind.LOGIN, op, request_id=request_id)
        if op in ("subscribe", "unsubscribe"):
            args = message.get("args")
            if not isinstance(args, list) or not args or not all(
                    isinstance(a, dict) and isinstance(a.get("channel"), str) for a in args):
                raise BadRequest(f'"{op}" needs "args": a non-empty list of {{"channel": ...}} objects')
            kind = StreamKind.SUBSCRIBE if op == "subscribe" else StreamKind.UNSUBSCRIBE
            return StreamMessage(kind, op, tuple(a["channel"] for a in args), request_id)
        return StreamMessage(StreamKind.OTHER, op, request_id=request_id)

    def login_ack(self, message: StreamMessage) -> str:
        return json.dumps({"event": "login", "code": "0", "msg": "", "connId": "signing-proxy"})

    def refusal(self, message: StreamMessage, code: str, text: str) -> str:
        msg = f"{code}: {text}"
        if message.kind is StreamKind.OTHER and message.request_id is not None:
            return json.dumps({"id": message.request_id, "op": message.op, "code": REFUSED_CODE,
                               "msg": msg, "data": []})
        return json.dumps({"event": "error", "code": REFUSED_CODE, "msg": msg, "connId": "signing-proxy"})


STREAM = OkxStream()
