"""A private-stream protocol two exchanges share: ``login`` with apiKey, passphrase, a
timestamp in seconds and ``sign`` over ``{timestamp}GET{verify path}``, signed as the exchange
signs REST; ``subscribe`` with ``{"channel": ...}`` objects; the text ``ping``. Refusals use the
exchange's ``{"event": "error", "code", "msg"}`` (or, for an operation with an ``id``, the
operation's own ``{"id", "op", "code", "msg", "data": []}``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials, Environment
from proxy.exchanges.streams import ForwardsSubscriptions, StreamKind, StreamMessage, parse_bot_message
from proxy.model.request import Stamp


@dataclass(frozen=True)
class PassphraseLoginStream(ForwardsSubscriptions):
    path: str
    channels: frozenset[str]
    live: str
    testnet: str
    verify_path: str
    #: the exchange's REST signature (base64), reused for the login
    sign: Callable[[Credentials, bytes], str]
    #: the exchange's "login ok" code, as it writes it (a string or a number)
    ok_code: str | int
    #: the code the proxy writes into its refusals (the exchange's "illegal request")
    refused_code: str | int

    def url(self, environment: Environment) -> str:
        return {"live": self.live, "testnet": self.testnet}[environment]

    def login(self, creds: Credentials, stamp: Stamp) -> str:
        if creds.passphrase is None:
            raise TypeError("this exchange's keys come with a passphrase")
        timestamp = str(stamp.now_ms // 1000)
        sign = self.sign(creds, f"{timestamp}GET{self.verify_path}".encode())
        return json.dumps({"op": "login", "args": [{
            "apiKey": creds.api_key, "passphrase": creds.passphrase.reveal(), "timestamp": timestamp,
            "sign": sign}]})

    def login_result(self, message: Any) -> bool | None:
        if not isinstance(message, dict):
            return None
        if message.get("event") == "login":
            return str(message.get("code")) == str(self.ok_code)
        if message.get("event") == "error":
            return False
        return None

    def classify(self, raw: str) -> StreamMessage:
        if raw == "ping":
            return StreamMessage(StreamKind.PING, "ping")
        message = parse_bot_message(raw)
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise BadRequest('a stream message is "ping" or an object with "op"')
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
        return json.dumps({"event": "login", "code": self.ok_code, "msg": "", "connId": "signing-proxy"})

    def refusal(self, message: StreamMessage, code: str, text: str) -> str:
        msg = f"{code}: {text}"
        if message.kind is StreamKind.OTHER and message.request_id is not None:
            return json.dumps({"id": message.request_id, "op": message.op, "code": str(self.refused_code),
                               "msg": msg, "data": []})
        return json.dumps({"event": "error", "code": self.refused_code, "msg": msg,
                           "connId": "signing-proxy"})
