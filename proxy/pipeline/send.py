"""Stamp, sign and forward one request: time or nonce, key choice, the durable decision record
first, then the exchange, then the queued outcome."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from proxy.errors import NotReady, Refusal, UpstreamError, UpstreamTimeout
from proxy.exchanges.base import Credentials
from proxy.guards.hooks import ExchangeSafety
from proxy.guards.key_fallback import KeyFallbacks, key_refused
from proxy.model.request import Prepared, Stamp
from proxy.pipeline.accounts import Account
from proxy.pipeline.decision import Decisions, RequestContext
from proxy.pipeline.http import Reply
from proxy.state import StateStore
from proxy.state.group_commit import Spend
from proxy.upstream import Upstream

NONCE_LOCK_TIMEOUT_S = 10.0


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
        if account.pool is not None:  # a key pool: the key with the fewest requests in flight here
            def refusal(path: str, key: Credentials) -> NotReady | None:  # never a refused key
                return self.safety.key_refusal(account.name, key.version, path)

            with account.pool.lease(refusal) as (index, leased):
                ctx.key_version = leased.version
                ctx.key_index = index
                return await self._stamp_and_send_with(ctx, account, prepared, leased, rule)
        return await self._stamp_and_send_with(ctx, account, prepared, creds, rule)

    async def _stamp_and_send_with(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials, rule: str
    ) -> Reply:
        async with self.stamp(account, creds) as stamp:
            return await self._send(ctx, account, prepared, creds, stamp, rule)

    @contextlib.asynccontextmanager
    async def stamp(self, account: Account, creds: Credentials) -> AsyncIterator[Stamp]:
        """Time and nonce for one signature (a REST request or a stream login). A strictly
        increasing nonce must also arrive in order: the key stays held (across workers and, with
        Redis, hosts) until the block ends, i.e. until the exchange has answered."""
        unit = account.exchange.nonce_unit
        if unit is None:
            yield self.time_stamp(account)
            return
        if self.store is None:
            raise NotReady("no state store is configured for this exchange's nonces")
        key_id = f"{account.cfg.exchange}:{creds.api_key}"
        async with self.store.key_lock(key_id, NONCE_LOCK_TIMEOUT_S):
            nonce = await self.store.next_nonce(key_id, unit, now_us=self.clock_ns() // 1000)
            yield Stamp(now_ms=self.clock_ns() // 1_000_000, nonce=nonce, unique=str(uuid.uuid4()))

    def time_stamp(self, account: Account) -> Stamp:
        """The stamp of a time-stamped exchange: the exchange's clock where it is known."""
        now_ms = self.clock_ns() // 1_000_000
        if self.exchange_clock is not None:  # sign with the exchange's clock, not the host's
            now_ms += self.exchange_clock.offset_ms(account.name)
        return Stamp(now_ms=now_ms, nonce=now_ms, unique=str(uuid.uuid4()))

    def batchable(self, account: Account) -> bool:
        """Whether the group commit can take the whole way to sending: no key to lease from a
        pool, no nonce to allocate under the key lock (time-stamped exchanges)."""
        return account.pool is None and account.exchange.nonce_unit is None

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
