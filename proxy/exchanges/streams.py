"""Private streams, the pure part: what a bot's stream message means, and the messages the
proxy writes in an exchange's own stream format (pure: no I/O, no clock).

A bot's message is one of: its own login (replaced by the proxy's, never forwarded), a ping,
a subscription to private channels (category ``read``), or anything else, which would act or
is not understood, and is refused in the exchange's own stream error format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials, Environment
from proxy.model.request import Stamp

#: the longest stream message a bot may send (subscriptions are small)
MAX_BOT_MESSAGE = 16 * 1024


class StreamKind(StrEnum):
    LOGIN = "login"
    PING = "ping"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    OTHER = "other"


@dataclass(frozen=True)
class StreamMessage:
    """A bot's stream message as the proxy understood it."""

    kind: StreamKind
    op: str
    channels: tuple[str, ...] = ()
    request_id: str | None = None


@dataclass(frozen=True)
class StreamToken:
    """A stream authenticated by a token fetched over REST (no login message). The proxy fetches
    its own token with a signed request through the normal send path (audited as rule
    ``stream.token``, weight-charged) for each bot's stream, keeps it, and ``authorize`` puts it
    into each subscription. A bot's own request for a token (what ccxt does first) is answered
    by the proxy with ``placeholder``, which grants nothing, and never reaches the exchange."""

    #: the exchange's token request (its catalogue entry has ``Action.STREAM_TOKEN``)
    method: str
    path: str
    content_type: str
    #: the exchange's answer -> what ``authorize`` needs (``token``, and any other field it
    #: needs), and ``valid_s`` when the answer says how long the token may be used;
    #: ValueError when the answer carries no token
    parse: Callable[[bytes], Mapping[str, str]]
    #: the JSON body the bot gets for its own token request
    placeholder: bytes
    #: how long a fresh token may be used to subscribe (s) when the answer does not say; the
    #: relay fetches a new one for subscriptions made after half of the validity
    valid_s: float
    #: (text the exchange writes, text the bot was told) to swap in each exchange message,
    #: where the token's answer named something the bot sees (None: messages pass unchanged)
    shown: Callable[[Mapping[str, str]], tuple[str, str]] | None = None


@runtime_checkable
class PrivateStream(Protocol):
    """One exchange's private stream: where it is, how to log in, what bots may send."""

    @property
    def path(self) -> str:
        """The exchange's private stream path (the bot connects to ``/x/{account}{path}``)."""
        ...

    @property
    def channels(self) -> frozenset[str]:
        """The private channels a bot may subscribe to (all category ``read``); a channel may
        also be one of these followed by ``.`` and a qualifier (``user.orders.any.any.raw``)."""
        ...

    @property
    def token(self) -> StreamToken | None:
        """The REST token the stream's subscriptions carry (None: a login message, or per-message
        signatures, authenticate it)."""
        ...

    def url(self, environment: Environment) -> str:
        """The exchange's stream origin (``wss://...``) for ``environment``."""
        ...

    def login(self, creds: Credentials, stamp: Stamp) -> str | None:
        """The proxy's login message, signed with the account's key (None: the exchange has
        no login message; its subscriptions carry the authentication, see ``authorize``)."""
        ...

    def authorize(self, message: StreamMessage, raw: str, creds: Credentials, stamp: Stamp,
                  grant: Mapping[str, str]) -> str:
        """An allowed subscription as sent to the exchange (with the authentication the exchange
        wants in it, where it wants it there; ``grant``: the parsed REST token, else empty)."""
        ...

    def login_result(self, message: Any) -> bool | None:
        """True: this exchange message accepts the login; False: refuses it; None: another."""
        ...

    def classify(self, raw: str) -> StreamMessage:
        """What a bot's message is; BadRequest when it is not one the exchange would parse."""
        ...

    def login_ack(self, message: StreamMessage) -> str:
        """The answer the bot expects to its own login, which the proxy swallowed."""
        ...

    def refusal(self, message: StreamMessage, code: str, text: str) -> str:
        """A refusal in the exchange's own stream error format."""
        ...


class ForwardsSubscriptions:
    """For streams authenticated once at login: subscriptions go to the exchange as the bot wrote them."""

    token: StreamToken | None = None

    def authorize(self, message: StreamMessage, raw: str, creds: Credentials, stamp: Stamp,
                  grant: Mapping[str, str]) -> str:
        return raw


def allowed_channel(channel: str, private: frozenset[str]) -> bool:
    """Is ``channel`` one of the private channels, or one qualified with ``.`` after it?"""
    return any(channel == p or channel.startswith(p + ".") for p in private)


def parse_bot_message(raw: str | bytes) -> Any:
    """A bot's stream message as JSON; BadRequest for anything else (no guessing)."""
    if len(raw) > MAX_BOT_MESSAGE:
        raise BadRequest(f"stream messages are limited to {MAX_BOT_MESSAGE} bytes")
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        raise BadRequest("a stream message must be one JSON value") from None


def _no_constant(name: str) -> Any:
    raise ValueError(name)
