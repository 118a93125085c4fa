"""Waiting for another request's claim on a client order id, the same way on every backend."""

from __future__ import annotations

import asyncio
import time

from proxy.state.base import BeginResult, IdempotencyScope, InFlight, StateStore


async def poll_begin(
    store: StateStore,
    scope: IdempotencyScope,
    timeout_s: float,
    *,
    content_hash: str,
    ttl_s: float,
    lease_s: float,
) -> BeginResult:
    """Re-run ``begin`` with backoff until it is no longer InFlight or the time is up.

    Polling rather than pub/sub: it needs nothing but ``begin``, works on both backends and
    survives reconnects; the backoff (2 ms doubling to 50 ms) keeps the store load small.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        result = await store.begin(scope, content_hash, ttl_s, lease_s=lease_s)
        remaining = deadline - time.monotonic()
        if not isinstance(result, InFlight) or remaining <= 0:
            return result
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)
