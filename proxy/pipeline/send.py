"""Stamp, sign and forward one request: time or nonce, key choice, the durable decision record
first, then the exchange, then the queued outcome."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from proxy.errors import NotReady, UpstreamError, UpstreamTimeout
from proxy.exchanges.base import Credentials
from proxy.guards.hooks import ExchangeSafety
from proxy.model.request import Prepared, Stamp
from proxy.pipeline.accounts import Account
from proxy.pipeline.decision import Decisions, RequestContext
from proxy.pipeline.http import Reply
from proxy.state import StateStore
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
        unit = account.exchange.nonce_unit
        if unit is None:
            now_ms = self.clock_ns() // 1_000_000
            if self.exchange_clock is not None:  # sign with the exchange's clock, not the host's
                now_ms += self.exchange_clock.offset_ms(account.name)
            stamp = Stamp(now_ms=now_ms, nonce=now_ms, unique=str(uuid.uuid4()))
            return await self._send(ctx, account, prepared, creds, stamp, rule)
        if self.store is None:
            raise NotReady("no state store is configured for this exchange's nonces")
        # Strictly increasing nonces must also arrive in order: hold the key from allocation
        # until the exchange has answered (across workers and, with Redis, hosts).
        key_id = f"{account.cfg.exchange}:{creds.api_key}"
        async with self.store.key_lock(key_id, NONCE_LOCK_TIMEOUT_S):
            nonce = await self.store.next_nonce(key_id, unit, now_us=self.clock_ns() // 1000)
            stamp = Stamp(now_ms=self.clock_ns() // 1_000_000, nonce=nonce, unique=str(uuid.uuid4()))
            return await self._send(ctx, account, prepared, creds, stamp, rule)

    async def _send(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials,
        stamp: Stamp, rule: str,
    ) -> Reply:
        await self.safety.spend_weight(account.name, account.cfg.exchange, account.cfg.weight_per_minute,
                                       prepared)
        ctx.stamp = stamp
        if creds.key.remote:  # Vault Transit signs over the network: keep the event loop free
            outbound = await asyncio.to_thread(account.exchange.sign, prepared, creds, stamp, account.host)
        else:
            outbound = account.exchange.sign(prepared, creds, stamp, account.host)
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
        self.decisions.outcome(ctx, response, rule)
        return Reply(response.status, response.headers, response.body)
