"""Kraken spot's authenticated WebSocket v2 (``wss://ws-auth.kraken.com/v2``): no login message;
each subscription to a private channel (``executions``, ``balances``) carries a token from the
REST ``GetWebSocketsToken``. The proxy fetches its own token per bot stream and puts it into
each subscription; a bot's own ``GetWebSocketsToken`` is answered with a placeholder that grants
nothing (a real token would let its holder trade over the socket around the proxy's policy).

Order entry over the socket (``add_order``, ``amend_order``, ``edit_order``, ``cancel_order``,
``cancel_all``, ``cancel_on_disconnect``, ``batch_add``, ``batch_cancel``) and public channels are
refused in Kraken's own format ``{"method", "success": false, "error", "req_id"}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials, Environment
from proxy.exchanges.streams import StreamKind, StreamMessage, StreamToken, parse_bot_message
from proxy.model.request import Stamp

TOKEN_PATH = "/0/private/GetWebSocketsToken"  # noqa: S105 (a path)
#: what a bot's GetWebSocketsToken gets: Kraken's answer shape, a token that opens nothing
PLACEHOLDER = b'{"error": [], "result": {"token": "proxy-issued-token-grants-nothing", "expires": 900}}'


def _parse_token(body: bytes) -> Mapping[str, str]:
    """``{"error": [], "result": {"token", "expires"}}`` -> the token and how long it is valid."""
    answer = json.loads(body)
    result = answer.get("result") if isinstance(answer, dict) and not answer.get("error") else None
    token = result.get("token") if isinstance(result, dict) else None
    if not isinstance(token, str) or not token:
        raise ValueError("no token in the answer")
    expires = result.get("expires") if isinstance(result, dict) else None
    valid = {"valid_s": str(expires)} if isinstance(expires, int) and not isinstance(expires, bool) else {}
    return {"token": token, **valid}


#: Kraken: a token is to be used within 15 minutes; a subscription made with it keeps it valid
TOKEN = StreamToken("POST", TOKEN_PATH, "application/x-www-form-urlencoded", _parse_token, PLACEHOLDER,
                    valid_s=900)


@dataclass(frozen=True)
class KrakenStream:
    path: str = "/v2"
    channels: frozenset[str] = frozenset({"executions", "balances"})
    token: StreamToken | None = TOKEN

    def url(self, environment: Environment) -> str:
        return "wss://ws-auth.kraken.com"  # Kraken spot has no testnet (base_url refuses one)

    def login(self, creds: Credentials, stamp: Stamp) -> str | None:
        return None

    def login_result(self, message: Any) -> bool | None:
        return None

    def classify(self, raw: str) -> StreamMessage:
        message = parse_bot_message(raw)
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            raise BadRequest('a Kraken v2 stream message is an object with "method"')
        method, req = message["method"], message.get("req_id")
        request_id = str(req) if isinstance(req, int) and not isinstance(req, bool) else None
        if method == "ping":
            return StreamMessage(StreamKind.PING, method, request_id=request_id)
        if method in ("subscribe", "unsubscribe"):
            params = message.get("params")
            channel = params.get("channel") if isinstance(params, dict) else None
            if not isinstance(channel, str):
                raise BadRequest(f'"{method}" needs "params" with a "channel"')
            kind = StreamKind.SUBSCRIBE if method == "subscribe" else StreamKind.UNSUBSCRIBE
            return StreamMessage(kind, method, (channel,), request_id)
        return StreamMessage(StreamKind.OTHER, method, request_id=request_id)

    def authorize(self, message: StreamMessage, raw: str, creds: Credentials, stamp: Stamp,
                  grant: Mapping[str, str]) -> str:
        """The proxy's token replaces whatever the bot put in (its placeholder)."""
        request = json.loads(raw)
        request["params"] = {**request["params"], "token": grant["token"]}
        return json.dumps(request)

    def login_ack(self, message: StreamMessage) -> str:  # never asked: no login message
        return self.refusal(message, "endpoint_forbidden", "the proxy authenticates for you")

    def refusal(self, message: StreamMessage, code: str, text: str) -> str:
        return json.dumps({"method": message.op, "success": False, "error": f"{code}: {text}",
                           **({"req_id": int(message.request_id)} if message.request_id else {})})


STREAM = KrakenStream()
