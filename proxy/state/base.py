"""The state-store interface: nonces, per-key locks, idempotency records, windows and flags.

Two backends implement it (sqlite: one host; redis: several hosts). Everything the proxy must
agree on across workers, hosts and restarts lives here, so this is where "fail closed" is
enforced: a store that cannot be reached raises :class:`proxy.errors.NotReady` and the caller
sends nothing.

Time is always an argument (``now_us``, microseconds since the epoch) so tests can skew it;
when omitted the store's injected clock is used. Every host must keep its clock in sync (NTP):
lease and TTL expiry compare the callers' clocks, not the server's.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

NonceUnit = Literal["s", "ms", "us", "ns"]
"""The exchange's nonce unit. Recorded per key on first use; a later change is refused."""

NONCE_UNITS: tuple[NonceUnit, ...] = ("s", "ms", "us", "ns")

DEFAULT_RECORD_TTL_S = 24 * 3600.0
"""How long a completed idempotency record is kept (and replayed) by default."""

DEFAULT_LEASE_S = 30.0
"""How long an in-flight owner may hold a client order id (or a key lock) before it is
presumed dead. Longer than any upstream timeout, so a live owner never loses it."""


def wall_clock_us() -> int:
    """The default clock: wall time in microseconds (stores accept an injected one)."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class IdempotencyScope:
    """Who may not place the same client order id twice: (client, account, client_order_id)."""

    client: str
    account: str
    client_order_id: str

    def storage_key(self) -> str:
        """An unambiguous key (length-prefixed, so no separator can be forged by a bot)."""
        parts = (self.client, self.account, self.client_order_id)
        return "|".join(f"{len(p)}:{p}" for p in parts)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The exchange's answer kept for replay: status, a subset of headers, the body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class Owner:
    """You hold the client order id: place the order, then ``complete`` or ``abandon``.

    ``previous_unknown`` is True when an earlier owner's lease expired without an answer
    (crash, kill -9): its order may or may not have reached the exchange, so ask the exchange
    by client order id before placing again. ``token`` identifies this attempt; pass it to
    ``complete``/``abandon`` so a late, presumed-dead owner cannot touch your attempt.
    """

    token: str
    previous_unknown: bool = False


@dataclass(frozen=True, slots=True)
class Replay:
    """The order was placed before with the same content: answer with the stored response."""

    response: StoredResponse


@dataclass(frozen=True, slots=True)
class Conflict:
    """Same client order id, different content: refuse (409 idempotency_conflict)."""


@dataclass(frozen=True, slots=True)
class InFlight:
    """Another request holds the id right now; ``wait`` for it (until ``lease_until_us`` at most
    before its owner is presumed dead)."""

    lease_until_us: int


BeginResult = Owner | Replay | Conflict | InFlight


class KeyLease:
    """Handle yielded by ``key_lock``. ``lost`` turns True if a distributed lease could not be
    kept (store unreachable past its expiry); check it before sending when ordering matters."""

    __slots__ = ("lost",)

    def __init__(self) -> None:
        self.lost = False


class StateStore(Protocol):
    """Shared state for every worker and host; all methods are async and fail closed."""

    async def ping(self) -> None:
        """Raise NotReady unless the store answers (readiness probe)."""

    async def close(self) -> None:
        """Release connections and threads."""

    # -- nonces ---------------------------------------------------------------------------
    async def next_nonce(self, key_id: str, unit: NonceUnit, *, now_us: int | None = None) -> int:
        """Allocate ``max(now in unit, last + 1)`` and persist it before returning."""

    async def raise_floor(self, key_id: str, unit: NonceUnit, floor: int) -> int:
        """After "nonce too low": make the next nonce exceed ``floor``; never lowers.
        Returns the stored high-water mark."""

    async def last_nonce(self, key_id: str) -> int | None:
        """The high-water mark, or None if the key never signed."""

    def key_lock(
        self, key_id: str, timeout_s: float, *, lease_s: float = DEFAULT_LEASE_S
    ) -> AbstractAsyncContextManager[KeyLease]:
        """Hold ``key_id`` exclusively (all workers; all hosts for redis) from nonce
        allocation until the exchange has answered. Raises LockTimeout after ``timeout_s``."""

    # -- idempotent client order ids ------------------------------------------------------
    async def begin(
        self,
        scope: IdempotencyScope,
        content_hash: str,
        ttl_s: float = DEFAULT_RECORD_TTL_S,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        now_us: int | None = None,
    ) -> BeginResult:
        """Claim a client order id (see the result types)."""

    async def wait(
        self,
        scope: IdempotencyScope,
        timeout_s: float,
        *,
        content_hash: str,
        ttl_s: float = DEFAULT_RECORD_TTL_S,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> BeginResult:
        """After InFlight: poll until Replay, Owner (holder abandoned or died) or Conflict;
        InFlight again if ``timeout_s`` passes first."""

    async def complete(
        self,
        scope: IdempotencyScope,
        response: StoredResponse,
        *,
        token: str | None = None,
        ttl_s: float = DEFAULT_RECORD_TTL_S,
        now_us: int | None = None,
    ) -> bool:
        """Store the exchange's answer for ``ttl_s``. False if ``token`` is no longer the
        owner (its lease expired and someone took over) or the record is gone."""

    async def abandon(self, scope: IdempotencyScope, *, token: str | None = None) -> bool:
        """The request provably never reached the exchange: forget the claim so a retry may
        place it. False if ``token`` is not the current in-flight owner."""

    # -- rolling windows and flags ----------------------------------------------------------
    async def add_to_window(
        self,
        key: str,
        amount: Decimal | int,
        window_s: float,
        *,
        limit: Decimal | int | None = None,
        now_us: int | None = None,
    ) -> Decimal:
        """Add ``amount`` (>= 0, at most 18 decimals) and return the exact total over the last
        ``window_s``. With ``limit``: if the new total would exceed it, nothing is added and
        that would-be total (> limit) is returned, atomically."""

    async def set_flag(
        self, name: str, value: str, ttl_s: float | None = None, *, now_us: int | None = None
    ) -> None:
        """Set a shared flag (kill switch, account pause) for ``ttl_s`` (None: until cleared)."""

    async def extend_flag(
        self, name: str, value: str, ttl_s: float, *, now_us: int | None = None
    ) -> str:
        """Set the flag for ``ttl_s`` unless it is already set to end later (or never), in one
        atomic step, so a shorter pause never replaces a longer one set by another worker.
        Returns the value in force afterwards: ``value``, or the one that ends later."""

    async def get_flag(self, name: str, *, now_us: int | None = None) -> str | None:
        """The flag's value, or None if unset or expired."""

    async def clear_flag(self, name: str) -> None:
        """Remove a flag."""
