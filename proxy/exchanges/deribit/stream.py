"""Deribit's JSON-RPC stream (``/ws/api/v2``): ``public/auth`` with ``grant_type =
client_signature``, the signature hex HMAC-SHA256 of ``{timestamp}\\n{nonce}\\n{data}``. The
connection is then authorised for ``private/subscribe`` to ``user.*`` channels.

The access and refresh tokens Deribit returns stay in the proxy (they would be usable
credentials): the bot's own ``public/auth`` is answered with a placeholder token that grants
nothing. Every other ``private/*`` method (buy, sell, cancel, edit, transfers...) and public
subscriptions are refused as a JSON-RPC error ``13021 forbidden``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials, Environment
from proxy.exchanges.streams import ForwardsSubscriptions, StreamKind, StreamMessage, parse_bot_message
from proxy.model.request import Stamp
from proxy.model.signers import HmacKey

#: the request id of the proxy's own login (bots' ids are their own business)
LOGIN_ID = 9_007_199_254_740_991
PINGS = frozenset({"public/test", "public/set_heartbeat", "public/disable_heartbeat", "public/hello",
                   "public/get_time"})
#: a token that grants nothing, shown to a bot in place of Deribit's
PLACEHOLDER_TOKEN = "held-by-the-signing-proxy"  # noqa: S105 - not a secret, by design


def login_signature(secret: HmacKey, timestamp: int, nonce: str, data: str = "") -> str:
    """Deribit's client signature for ``public/auth`` (its published WebSocket example)."""
    return secret.hexdigest(f"{timestamp}\n{nonce}\n{data}".encode())


@dataclass(frozen=True)
class DeribitStream(ForwardsSubscriptions):
    path: str = "/ws/api/v2"
    channels: frozenset[str] = frozenset({"user.orders", "user.trades", "user.portfolio", "user.changes"})

    def url(self, environment: Environment) -> str:
        return {"live": "wss://www.deribit.com", "testnet": "wss://test.deribit.com"}[environment]

    def login(self, creds: Credentials, stamp: Stamp) -> str:
        if not isinstance(creds.key, HmacKey):
            raise TypeError("Deribit signs with the client secret (HMAC)")
        nonce = stamp.unique.replace("-", "")[:16]
        return json.dumps({"jsonrpc": "2.0", "id": LOGIN_ID, "method": "public/auth", "params": {
            "grant_type": "client_signature", "client_id": creds.api_key, "timestamp": stamp.now_ms,
            "signature": login_signature(creds.key, stamp.now_ms, nonce), "nonce": nonce, "data": ""}})

    def login_result(self, message: Any) -> bool | None:
        if not isinstance(message, dict) or message.get("id") != LOGIN_ID:
            return None
        result = message.get("result")
        return isinstance(result, dict) and "access_token" in result

    def classify(self, raw: str) -> StreamMessage:
        message = parse_bot_message(raw)
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            raise BadRequest('a Deribit stream message is a JSON-RPC object with "method"')
        method, ident = message["method"], message.get("id")
        usable = isinstance(ident, int | str) and not isinstance(ident, bool)
        request_id = json.dumps(ident) if usable else None
        if method == "public/auth":
            return StreamMessage(StreamKind.LOGIN, method, request_id=request_id)
        if method in PINGS:
            return StreamMessage(StreamKind.PING, method, request_id=request_id)
        if method in ("private/subscribe", "private/unsubscribe"):
            params = message.get("params")
            channels = params.get("channels") if isinstance(params, dict) else None
            if not isinstance(channels, list) or not channels or not all(
                    isinstance(c, str) for c in channels):
                raise BadRequest(f'"{method}" needs "params": {{"channels": [...]}}')
            kind = StreamKind.SUBSCRIBE if method == "private/subscribe" else StreamKind.UNSUBSCRIBE
            return StreamMessage(kind, method, tuple(channels), request_id)
        return StreamMessage(StreamKind.OTHER, method, request_id=request_id)

    def login_ack(self, message: StreamMessage) -> str:
        return json.dumps({"jsonrpc": "2.0", "id": _id(message), "result": {
            "access_token": PLACEHOLDER_TOKEN, "refresh_token": PLACEHOLDER_TOKEN, "expires_in": 31536000,
            "scope": "connection", "token_type": "bearer"}})

    def refusal(self, message: StreamMessage, code: str, text: str) -> str:
        return json.dumps({"jsonrpc": "2.0", "id": _id(message), "error": {
            "code": 13021, "message": "forbidden", "data": {"reason": f"{code}: {text}"}}})


def _id(message: StreamMessage) -> Any:
    return json.loads(message.request_id) if message.request_id is not None else None


STREAM = DeribitStream()
