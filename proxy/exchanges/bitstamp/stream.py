"""Bitstamp's WebSocket v2 (``wss://ws.bitstamp.net``): no login message; a private channel
(``private-my_orders_{pair}-{user_id}``, ``private-my_trades_{pair}-{user_id}``) is subscribed with
``bts:subscribe`` carrying ``data.auth``, a token from the REST ``websockets_token``, whose
answer also names the ``user_id`` the channel names end with.

The proxy fetches its own token (and so the account's user id) per bot stream and writes both
into each private subscription. A bot's own ``websockets_token`` is answered by the proxy with a
placeholder token that grants nothing and user id ``0``; the channel names the exchange sends
back are shown to the bot with that ``0``, so a bot (ccxt) finds its subscriptions by the names
it asked for. Public channels and unknown events are refused as Bitstamp's ``bts:error``; the
WebSocket has no order entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials, Environment
from proxy.exchanges.streams import StreamKind, StreamMessage, StreamToken, parse_bot_message
from proxy.model.request import Stamp

TOKEN_PATH = "/api/v2/websockets_token/"  # noqa: S105 (a path)
#: the user id a bot is told (its channel names end with it)
SHOWN_USER_ID = "0"
PLACEHOLDER = b'{"token": "proxy-issued-token-grants-nothing", "valid_sec": 60, "user_id": 0}'
_PRIVATE = re.compile(r"(private-my_orders|private-my_trades)_([a-z0-9]{2,24}(?:-perp)?)-([0-9]{1,20})")


def _parse_token(body: bytes) -> Mapping[str, str]:
    """``{"token", "valid_sec", "user_id"}`` -> the token, the user id and how long it is valid."""
    answer = json.loads(body)
    token = answer.get("token") if isinstance(answer, dict) else None
    user = answer.get("user_id") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token or not isinstance(user, int | str) or isinstance(user, bool):
        raise ValueError("no token or user id in the answer")
    valid = answer.get("valid_sec")
    return {"token": token, "user_id": str(user),
            **({"valid_s": str(valid)} if isinstance(valid, int) and not isinstance(valid, bool) else {})}


def _shown(grant: Mapping[str, str]) -> tuple[str, str]:
    return f'-{grant["user_id"]}"', f'-{SHOWN_USER_ID}"'


#: Bitstamp's answer says how long: valid_sec 60
TOKEN = StreamToken("POST", TOKEN_PATH, "application/x-www-form-urlencoded", _parse_token, PLACEHOLDER,
                    valid_s=60, shown=_shown)


@dataclass(frozen=True)
class BitstampStream:
    path: str = "/"
    channels: frozenset[str] = frozenset({"private-my_orders", "private-my_trades"})
    token: StreamToken | None = TOKEN

    def url(self, environment: Environment) -> str:
        return "wss://ws.bitstamp.net"

    def login(self, creds: Credentials, stamp: Stamp) -> str | None:
        return None

    def login_result(self, message: Any) -> bool | None:
        return None

    def classify(self, raw: str) -> StreamMessage:
        message = parse_bot_message(raw)
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise BadRequest('a Bitstamp stream message is an object with "event"')
        event = message["event"]
        if event == "bts:heartbeat":
            return StreamMessage(StreamKind.PING, event)
        if event in ("bts:subscribe", "bts:unsubscribe"):
            data = message.get("data")
            channel = data.get("channel") if isinstance(data, dict) else None
            if not isinstance(channel, str):
                raise BadRequest(f'"{event}" needs "data" with a "channel"')
            private = _PRIVATE.fullmatch(channel)
            kind = StreamKind.SUBSCRIBE if event == "bts:subscribe" else StreamKind.UNSUBSCRIBE
            return StreamMessage(kind, event, (private.group(1) if private else channel,))
        return StreamMessage(StreamKind.OTHER, event)

    def authorize(self, message: StreamMessage, raw: str, creds: Credentials, stamp: Stamp,
                  grant: Mapping[str, str]) -> str:
        """The account's user id and the proxy's token replace what the bot was told."""
        request = json.loads(raw)
        private = _PRIVATE.fullmatch(request["data"]["channel"])
        assert private is not None  # classify let only private channels through
        channel = f"{private.group(1)}_{private.group(2)}-{grant['user_id']}"
        return json.dumps({"event": request["event"], "data": {"channel": channel, "auth": grant["token"]}})

    def login_ack(self, message: StreamMessage) -> str:  # never asked: no login message
        return self.refusal(message, "endpoint_forbidden", "the proxy authenticates for you")

    def refusal(self, message: StreamMessage, code: str, text: str) -> str:
        return json.dumps({"event": "bts:error", "channel": "",
                           "data": {"code": None, "message": f"{code}: {text}"}})


STREAM = BitstampStream()
