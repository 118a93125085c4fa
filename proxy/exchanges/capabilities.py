"""What generic code may ask of an exchange beyond parsing and signing: its declared capabilities.

Every exchange module declares one :class:`Capabilities` (its ``capabilities`` property). Each
field is required, so a module cannot forget one: it states the fact, or that it has none
(``None``, ``()`` or ``False``). Generic code (the guards, the pipeline, the configuration)
asks ``exchange.capabilities`` and never keeps a table keyed by exchange name; a test walks the
registry to check every exchange declares every capability.

Pure (L1): data and parsers only, no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.exchanges.client_order_ids import ClientOrderIdRules
from proxy.exchanges.order_ids import OrderIds
from proxy.exchanges.refusals import ErrorFormat
from proxy.exchanges.server_time import ServerTime
from proxy.exchanges.streams import PrivateStream
from proxy.exchanges.tickers import Ticker

# ---------------------------------------------------------------- key permissions


@dataclass(frozen=True)
class Permissions:
    """What the exchange says an API key may do (None: the answer does not say)."""

    can_withdraw: bool
    ip_restricted: bool | None = None


@dataclass(frozen=True)
class PermissionProbe:
    """A signed ``GET path`` (catalogued as a read) whose JSON answer says whether the key can
    withdraw. ``read`` raises (any exception) on an answer it cannot read: the caller refuses
    the key rather than guess."""

    path: str
    read: Callable[[Any], Permissions]

    def readable(self, data: Any) -> bool:
        """The answer is one this probe can read: the key signed a read that worked."""
        try:
            self.read(data)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return False
        return True

    def parse(self, status: int, body: bytes) -> Permissions:
        """The key's permissions from the exchange's answer; ValueError when it cannot be read."""
        if status != 200:
            raise ValueError(f"the exchange answered {status}")
        try:
            return self.read(json.loads(body))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ValueError(f"unreadable permission answer ({type(exc).__name__})") from None


@dataclass(frozen=True)
class SignedRead:
    """A harmless signed read any key of the account may make: ``keys rotate`` sends it with a
    new key before writing the key, and shows the exchange's own refusal."""

    method: str
    path: str
    query: bytes = b""
    body: bytes = b""
    #: does the JSON answer (of an HTTP 200) say the read worked; None: the status is enough
    ok: Callable[[Any], bool] | None = None


# ---------------------------------------------------------------- request weights


@dataclass(frozen=True)
class Weights:
    """The exchange's published request weights (or costs, credits: what it counts).

    ``cost(method, path, query, body)`` is what one request spends against the account's budget,
    parameter-dependent where the exchange's is: 0 where the exchange counts that request in
    another of its limits, the exchange's heaviest for a request it does not list.
    ``documented`` is every (method, path) whose cost the exchange publishes: a test fails when
    a catalogued endpoint the proxy forwards is missing from it. ``per_minute`` is the budget an
    account gets unless it sets ``weight_per_minute`` (None: no default budget)."""

    cost: Callable[[str, str, str, bytes], int]
    documented: frozenset[tuple[str, str]]
    per_minute: int | None = None


# ---------------------------------------------------------------- the declaration


@dataclass(frozen=True)
class Capabilities:
    """Everything generic code asks of one exchange. No field has a default: a new exchange
    declares each one, or says it has none."""

    #: its public server-time request, for window-based signing with the exchange's clock
    #: (None: nonce-based, or no server-time endpoint: signed with the host clock)
    server_time: ServerTime | None
    #: its public ticker, for reference prices (None: price rules needing one refuse)
    ticker: Ticker | None
    #: a signed read saying whether the key can withdraw (None: the key is used unchecked and
    #: the start-up log says so)
    key_permissions: PermissionProbe | None
    #: the read ``keys rotate`` signs with a new key before writing it
    key_check: SignedRead
    #: answer codes (besides HTTP 401) meaning "this API key is unknown or its signature does
    #: not verify": the codes ccxt maps to AuthenticationError
    key_refusal_codes: frozenset[str]
    #: published request weights (None: every request costs 1 and no budget by default)
    weights: Weights | None
    #: answer bodies (scanned in the first 4 KiB) that mean "nonce too low or reused"
    nonce_rejections: tuple[bytes, ...]
    #: IP bans (418) and request weight count per IP address, not per key: every account of
    #: the exchange behind one proxy address shares one budget and one ban
    ip_wide_limits: bool
    #: its module signs through the key interface Vault Transit can stand behind
    transit_signing: bool
    #: the account may set ``recv_window_ms`` (the exchange object's ``recv_window`` field)
    receive_window: bool
    #: boolean fields of the exchange object set for a testnet account (a demo-trading switch)
    testnet_switches: tuple[str, ...]
    #: the Vault KV fields of one key (``api_secret`` may live in Transit instead)
    secret_fields: tuple[str, ...]
    #: how the proxy spells a client order id it adds to a placement that has none (None: the
    #: exchange needs none added, or cannot take one); the module's ``with_client_order_id``
    #: adds it
    client_order_ids: ClientOrderIdRules | None
    #: where a placement answer holds the exchange's order id(s), for the audit record
    order_ids: OrderIds
    #: its private stream as the proxy carries it (None: bots cannot open one through the proxy)
    private_stream: PrivateStream | None
    #: its error format: the proxy's refusals rendered so ccxt raises the right class, and the
    #: exchange's own code and message read from an answer (for logs, /readyz, keys status)
    errors: ErrorFormat
