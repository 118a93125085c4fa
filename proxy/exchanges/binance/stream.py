"""Binance spot's user data stream over the WebSocket API (``/ws-api/v3``), the subscription
Binance's spot documentation describes (the listenKey endpoints are its older mechanism) and the
one ccxt 4.5.90's spot ``watch_orders`` uses: ``userDataStream.subscribe.signature`` with
``apiKey``, ``timestamp`` and a ``signature`` over the sorted parameters, signed like REST.
Events then arrive as ``{"subscriptionId", "event"}`` on the same socket.

There is no login message: the bot's signed subscription (placeholder key) is its login, and
the proxy re-signs it with the account's key. ``userDataStream.unsubscribe`` and ``ping`` pass.
Everything else, order entry (``order.place``, ``order.cancel``...), ``session.logon`` (which
would let unsigned requests act) and account queries, is refused in Binance's own WebSocket API
error format ``{"id", "status": 400, "error": {"code": -1020, "msg"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials, Environment
from proxy.exchanges.streams import StreamKind, StreamMessage, StreamToken, parse_bot_message
from proxy.model.request import Stamp

#: the one private "channel": the account's user data stream
USER_DATA = "userDataStream"
_SUBSCRIBE = ("userDataStream.subscribe.signature", "userDataStream.subscribe")
_UNSUBSCRIBE = "userDataStream.unsubscribe"
#: Binance's UNSUPPORTED_OPERATION
_REFUSED_CODE = -1020


@dataclass(frozen=True)
class BinanceStream:
    path: str = "/ws-api/v3"
    channels: frozenset[str] = frozenset({USER_DATA})
    token: StreamToken | None = None

    def url(self, environment: Environment) -> str:
        return {"live": "wss://ws-api.binance.com:443",
                "testnet": "wss://ws-api.testnet.binance.vision"}[environment]

    def login(self, creds: Credentials, stamp: Stamp) -> str | None:
        return None

    def login_result(self, message: Any) -> bool | None:
        return None

    def classify(self, raw: str) -> StreamMessage:
        message = parse_bot_message(raw)
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            raise BadRequest('a Binance WebSocket API request is an object with "method"')
        method, rid = message["method"], message.get("id")
        # kept as JSON, so the answer carries the bot's id with its type (Binance takes both)
        request_id = json.dumps(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) else None
        if method == "ping":
            return StreamMessage(StreamKind.PING, method, request_id=request_id)
        if method in _SUBSCRIBE:
            return StreamMessage(StreamKind.SUBSCRIBE, method, (USER_DATA,), request_id)
        if method == _UNSUBSCRIBE:
            return StreamMessage(StreamKind.UNSUBSCRIBE, method, (USER_DATA,), request_id)
        return StreamMessage(StreamKind.OTHER, method, request_id=request_id)

    def authorize(self, message: StreamMessage, raw: str, creds: Credentials, stamp: Stamp,
                  grant: Mapping[str, str]) -> str:
        """A subscription becomes ``userDataStream.subscribe.signature`` signed with the account's
        key (whatever the bot signed, or left unsigned after its own ``session.logon``)."""
        request = json.loads(raw)
        if message.kind is StreamKind.UNSUBSCRIBE:
            return raw
        from proxy.exchanges.binance import signature_for  # the package imports this module

        params = {"apiKey": creds.api_key, "timestamp": stamp.now_ms}
        payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        signature = unquote(signature_for(creds, payload.encode()))  # JSON carries it raw
        return json.dumps({"id": request.get("id"), "method": _SUBSCRIBE[0],
                           "params": {**params, "signature": signature}})

    def login_ack(self, message: StreamMessage) -> str:  # never asked: no login message
        return self.refusal(message, "endpoint_forbidden", "the proxy signs the subscription for you")

    def refusal(self, message: StreamMessage, code: str, text: str) -> str:
        rid = json.loads(message.request_id) if message.request_id is not None else None
        return json.dumps({"id": rid, "status": 400,
                           "error": {"code": _REFUSED_CODE, "msg": f"{code}: {text}"}})


STREAM = BinanceStream()
