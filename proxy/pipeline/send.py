"""Stamp, sign and forward one request: time or nonce, key choice, the durable decision record
first, then the exchange, then the queued outcome."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from proxy.errors import NotReady, Refusal, UpstreamError, UpstreamTimeout
from proxy.exchanges.base import Credentials
from proxy.guards.hooks import ExchangeSafety
from proxy.guards.key_fallback import KeyFallbacks, key_refused
from proxy.model.request import Prepared, Stamp
from proxy.pipeline.accounts import Account
from proxy.pipeline.decision import Decisions, RequestContext
from proxy.pipeline.http import Reply
from proxy.pipeline.ids import random_uuid
from proxy.state import StateStore
from proxy.state.group_commit import NonceRequest, Spend
from proxy.upstream import Upstream

NONCE_LOCK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Held:
    """Held for one signature: the key to sign with, and for a nonce exchange the nonce to
    allocate (its key's lock is held)."""

    creds: Credentials
    nonce: NonceRequest | None


class ClockOffsets(Protocol):
    """Exchange time minus host time per account, in ms (0 when unknown)."""

    def offset_ms(self, account: str) -> int: ...


class Sender:
    """The last stage: everything that happens once a request is allowed to go out."""

    def __init__(
        self, *, upstream: Upstream, store: StateStore | None, safety: ExchangeSafety,
        decisions: Decisions, clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.upstream = upstream
        self.store = store
        self.safety = safety
        self.decisions = decisions
        self.clock_ns = clock_ns
        #: exchange clock offsets for window-based exchanges (proxy.guards.clock); set by the worker
        self.exchange_clock: ClockOffsets | None = None
        #: the previous key version while the exchange refuses the newest (proxy.guards.key_fallback)
        self.fallbacks: KeyFallbacks | None = None

    async def stamp_and_send(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials, rule: str
    ) -> Reply:
        async with self.hold(ctx, account, creds) as held:
            stamp = await self._stamp(account, held)
            return await self._send(ctx, account, prepared, held.creds, stamp, rule)

    @contextlib.asynccontextmanager
    async def hold(self, ctx: RequestContext, account: Account, creds: Credentials) -> AsyncIterator[Held]:
        """What one signature holds until the exchange has answered: a key pool's key (the one
        with the fewest requests in flight here) and, for a nonce exchange, the key's lock
        (nonces must also arrive in order, across workers and, with Redis, hosts)."""
        if account.pool is None:
            async with self._key_held(account, creds) as held:
                yield held
            return

        def refusal(path: str, key: Credentials) -> NotReady | None:  # never a refused key
            return self.safety.key_refusal(account.name, key.version, path)

        with account.pool.lease(refusal) as (index, leased):
            ctx.key_version = leased.version
            ctx.key_index = index
            async with self._key_held(account, leased) as held:
                yield held

    @contextlib.asynccontextmanager
    async def _key_held(self, account: Account, creds: Credentials) -> AsyncIterator[Held]:
        unit = account.exchange.nonce_unit
        if unit is None:
            yield Held(creds, None)
            return
        if self.store is None:
            raise NotReady("no state store is configured for this exchange's nonces")
        key_id = f"{account.cfg.exchange}:{creds.api_key}"
        async with self.store.key_lock(key_id, NONCE_LOCK_TIMEOUT_S):
            yield Held(creds, NonceRequest(key_id, unit, self.clock_ns() // 1000))

    @contextlib.asynccontextmanager
    async def stamp(self, account: Account, creds: Credentials) -> AsyncIterator[Stamp]:
        """Time and nonce for one stream login, the key held as for a REST request."""
        async with self._key_held(account, creds) as held:
            yield await self._stamp(account, held)

    async def _stamp(self, account: Account, held: Held) -> Stamp:
        """One step at a time: the nonce in a transaction of its own (the batched way
        allocates it with the claim)."""
        if held.nonce is None:
            return self.time_stamp(account)
        assert self.store is not None
        n = held.nonce
        return self.nonce_stamp(await self.store.next_nonce(n.key_id, n.unit, now_us=n.now_us))

    def nonce_stamp(self, nonce: int) -> Stamp:
        """The stamp of a nonce exchange, with the nonce allocated under the key's lock."""
        return Stamp(now_ms=self.clock_ns() // 1_000_000, nonce=nonce, unique=random_uuid())

    def time_stamp(self, account: Account) -> Stamp:
        """The stamp of a time-stamped exchange: the exchange's clock where it is known."""
        now_ms = self.clock_ns() // 1_000_000
        if self.exchange_clock is not None:  # sign with the exchange's clock, not the host's
            now_ms += self.exchange_clock.offset_ms(account.name)
        return Stamp(now_ms=now_ms, nonce=now_ms, unique=random_uuid())

    def batchable(self, account: Account) -> bool:
        """Whether the group commit can take the whole way to sending: always, given a state
        store for a nonce exchange (the batch allocates the nonce with the claim)."""
        return account.exchange.nonce_unit is None or self.store is not None

    def weight_spend(self, account: Account, prepared: Prepared) -> Spend | None:
        """The weight the group commit spends for this order (None: no budget)."""
        return self.safety.weight_spend(account.name, account.cfg.exchange,
                                        account.cfg.weight_per_minute, prepared)

    def weight_refused(self, account: Account, retry_after: int) -> Refusal:
        """The refusal for an order whose weight the group commit found over budget."""
        return self.safety.weight_refused(account.name, account.cfg.weight_per_minute or 0, retry_after)

    async def send_recorded(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials, rule: str
    ) -> Reply:
        """Sign with ``ctx.stamp`` and forward: the group commit spent the weight and made the
        decision record (which names that stamp) durable."""
        assert ctx.stamp is not None
        return await self._send(ctx, account, prepared, creds, ctx.stamp, rule, recorded=True)

    async def _send(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials,
        stamp: Stamp, rule: str, *, recorded: bool = False,
    ) -> Reply:
        if not recorded:
            await self.safety.spend_weight(account.name, account.cfg.exchange,
                                           account.cfg.weight_per_minute, prepared)
        ctx.stamp = stamp
        if creds.key.remote:  # Vault Transit signs over the network: keep the event loop free
            outbound = await asyncio.to_thread(account.exchange.sign, prepared, creds, stamp, account.host)
        else:
            outbound = account.exchange.sign(prepared, creds, stamp, account.host)
        if not recorded:
            await self.decisions.durable(ctx, "allow", rule, phase="decision")
        ctx.sent = True
        try:
            response = await self.upstream.send(account.cfg.base_url, outbound)
        except UpstreamTimeout:
            self.safety.upstream_error(account.name, "timeout")
            raise
        except UpstreamError:
            self.safety.upstream_error(account.name, "unreachable")
            raise
        await self.safety.observe(account.name, account.cfg.exchange, response.status, response.headers,
                                  response.body)
        codes = account.exchange.capabilities.key_refusal_codes
        if self.fallbacks is not None and key_refused(codes, response.status, response.body):
            self.fallbacks.refused(account, creds.version, f"HTTP {response.status} to {prepared.path}")
        self.decisions.outcome(ctx, response, rule)
        return Reply(response.status, response.headers, response.body)
