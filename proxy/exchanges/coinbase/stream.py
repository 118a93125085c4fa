"""Coinbase Advanced Trade's user stream (``wss://advanced-trade-ws-user.coinbase.com``): no login
message; each ``subscribe`` to a private channel carries a CDP JWT (no ``uri`` claim). The proxy
strips whatever authentication the bot put in (``jwt``, or the legacy ``api_key``, ``timestamp``
and ``signature``) and adds its own JWT. Public channels are refused as Coinbase's
``{"type": "error", "message"}``; the WebSocket has no order entry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials, Environment
from proxy.exchanges.streams import StreamKind, StreamMessage, StreamToken, parse_bot_message
from proxy.model.request import Stamp

HEARTBEATS = "heartbeats"
_BOT_AUTH = frozenset({"jwt", "api_key", "timestamp", "signature"})
_FIELDS = frozenset({"type", "channel", "product_ids", *_BOT_AUTH})


@dataclass(frozen=True)
class CoinbaseStream:
    path: str = "/"
    #: the user's orders and balances, and the keep-alive channel
    channels: frozenset[str] = frozenset({"user", "futures_balance_summary", "heartbeats"})
    token: StreamToken | None = None

    def url(self, environment: Environment) -> str:
        return "wss://advanced-trade-ws-user.coinbase.com"

    def login(self, creds: Credentials, stamp: Stamp) -> str | None:
        return None

    def login_result(self, message: Any) -> bool | None:
        return None

    def classify(self, raw: str) -> StreamMessage:
        message = parse_bot_message(raw)
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise BadRequest('a Coinbase stream message is an object with "type"')
        kind = {"subscribe": StreamKind.SUBSCRIBE, "unsubscribe": StreamKind.UNSUBSCRIBE}.get(message["type"])
        if kind is None:
            return StreamMessage(StreamKind.OTHER, message["type"])
        channel, products = message.get("channel"), message.get("product_ids", [])
        if not isinstance(channel, str) or not isinstance(products, list) or not all(
                isinstance(p, str) for p in products):
            raise BadRequest(f'"{message["type"]}" needs "channel" and a list of "product_ids"')
        unknown = sorted(set(message) - _FIELDS)
        if unknown:
            raise BadRequest(f"unknown subscription fields {unknown}; the proxy sends none it does not know")
        return StreamMessage(kind, message["type"], (channel,))

    def authorize(self, message: StreamMessage, raw: str, creds: Credentials, stamp: Stamp,
                  grant: Mapping[str, str]) -> str:
        if message.channels == (HEARTBEATS,):  # the keep-alive channel needs no authentication
            return raw
        from proxy.exchanges.coinbase import cdp_jwt  # the package imports this module

        fields = {k: v for k, v in json.loads(raw).items() if k not in _BOT_AUTH}
        return json.dumps({**fields, "jwt": cdp_jwt(creds, stamp, None)})

    def login_ack(self, message: StreamMessage) -> str:
        return json.dumps({"type": "error", "message": "the proxy logs in for you"})  # never asked: no login

    def refusal(self, message: StreamMessage, code: str, text: str) -> str:
        return json.dumps({"type": "error", "message": f"{code}: {text}"})


STREAM = CoinbaseStream()
