"""Idempotent client order ids: one owner, replays, conflicts, abandon, leases, TTL."""

from __future__ import annotations

import asyncio

from proxy.state import (
    Conflict,
    IdempotencyScope,
    InFlight,
    Owner,
    Replay,
    StateStore,
    StoredResponse,
)
from tests.state.conftest import Target, kill_9, read_line, spawn

SCOPE = IdempotencyScope("bot", "binance-main", "coid-1")
RESPONSE = StoredResponse(
    status=200, headers=(("content-type", "application/json"),), body=b'{"orderId":1}\x00\xff'
)
NOW = 1_700_000_000_000_000


def run(target: Target, fn: object, clock_us: int | None = None) -> None:
    async def body() -> None:
        store = target.open() if clock_us is None else target.open(clock=lambda: clock_us)
        try:
            await fn(store)  # type: ignore[operator]
        finally:
            await store.close()

    asyncio.run(body())


def test_begin_20_concurrent_exactly_one_owner_others_replay(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        results = await asyncio.gather(*(store.begin(SCOPE, "h1") for _ in range(20)))
        owners = [r for r in results if isinstance(r, Owner)]
        assert len(owners) == 1 and not owners[0].previous_unknown
        assert all(isinstance(r, InFlight) for r in results if not isinstance(r, Owner))

        async def place() -> None:
            await asyncio.sleep(0.05)  # the exchange answering
            assert await store.complete(SCOPE, RESPONSE, token=owners[0].token)

        waits = [store.wait(SCOPE, 5.0, content_hash="h1") for _ in range(19)]
        _, *after = await asyncio.gather(place(), *waits)
        assert after == [Replay(RESPONSE)] * 19

    run(target, fn)


def test_begin_20_concurrent_across_stores_one_owner(target: Target) -> None:
    async def body() -> None:
        stores = [target.open() for _ in range(4)]  # like 4 workers
        try:
            results = await asyncio.gather(*(stores[i % 4].begin(SCOPE, "h1") for i in range(20)))
            assert sum(isinstance(r, Owner) for r in results) == 1
        finally:
            for s in stores:
                await s.close()

    asyncio.run(body())


def test_begin_conflict_on_different_content(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        owner = await store.begin(SCOPE, "h1")
        assert isinstance(owner, Owner)
        assert await store.begin(SCOPE, "h2") == Conflict()  # while in flight
        assert await store.complete(SCOPE, RESPONSE, token=owner.token)
        assert await store.begin(SCOPE, "h2") == Conflict()  # after completion
        assert await store.begin(SCOPE, "h1") == Replay(RESPONSE)
        other = IdempotencyScope("bot", "binance-main", "coid-2")
        assert isinstance(await store.begin(other, "h2"), Owner)  # other ids unaffected
        other_client = IdempotencyScope("bot2", "binance-main", "coid-1")
        assert isinstance(await store.begin(other_client, "h2"), Owner)

    run(target, fn)


def test_scope_key_cannot_be_forged_with_separators() -> None:
    a = IdempotencyScope("a|b", "c", "d").storage_key()
    b = IdempotencyScope("a", "b|c", "d").storage_key()
    assert a != b


def test_abandon_lets_a_retry_own_it(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        owner = await store.begin(SCOPE, "h1")
        assert isinstance(owner, Owner)
        waiter = asyncio.create_task(store.wait(SCOPE, 5.0, content_hash="h1"))
        await asyncio.sleep(0.02)
        assert await store.abandon(SCOPE, token=owner.token)
        became = await waiter
        assert isinstance(became, Owner) and not became.previous_unknown
        assert not await store.abandon(SCOPE, token=owner.token)  # stale token: refused
        assert isinstance(await store.begin(SCOPE, "h1"), InFlight)  # the waiter holds it
        assert await store.complete(SCOPE, RESPONSE, token=became.token)
        assert not await store.abandon(SCOPE)  # completed records are never abandoned
        assert await store.begin(SCOPE, "h1") == Replay(RESPONSE)

    run(target, fn)


def test_begin_after_lease_expiry_reports_previous_unknown(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        first = await store.begin(SCOPE, "h1", lease_s=30, now_us=NOW)
        assert isinstance(first, Owner)
        still = await store.begin(SCOPE, "h1", lease_s=30, now_us=NOW + 29_000_000)
        assert still == InFlight(NOW + 30_000_000)
        second = await store.begin(SCOPE, "h1", lease_s=30, now_us=NOW + 30_000_001)
        assert isinstance(second, Owner) and second.previous_unknown
        third = await store.begin(SCOPE, "h1", lease_s=30, now_us=NOW + 30_000_002)
        assert isinstance(third, InFlight)
        # The presumed-dead first owner wakes up: it can no longer touch the record.
        assert not await store.complete(SCOPE, RESPONSE, token=first.token)
        assert not await store.abandon(SCOPE, token=first.token)
        assert await store.complete(SCOPE, RESPONSE, token=second.token, now_us=NOW + 31_000_000)
        assert await store.begin(SCOPE, "h1", now_us=NOW + 32_000_000) == Replay(RESPONSE)

    run(target, fn)


def test_begin_after_owner_killed_with_9_reports_previous_unknown(target: Target) -> None:
    proc = spawn(target, "hold_begin", "bot", "binance-main", "coid-1", "h1", "0.3")
    try:
        assert read_line(proc) == "owner"
    finally:
        kill_9(proc)

    async def fn(store: StateStore) -> None:
        assert isinstance(await store.begin(SCOPE, "h1", lease_s=0.3), InFlight | Owner)
        result = await store.wait(SCOPE, 5.0, content_hash="h1", lease_s=0.3)
        assert isinstance(result, Owner) and result.previous_unknown

    run(target, fn)


def test_record_expires_after_ttl(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        owner = await store.begin(SCOPE, "h1", now_us=NOW)
        assert isinstance(owner, Owner)
        assert await store.complete(SCOPE, RESPONSE, token=owner.token, ttl_s=60, now_us=NOW)
        assert await store.begin(SCOPE, "h2", now_us=NOW + 59_000_000) == Conflict()
        fresh = await store.begin(SCOPE, "h2", now_us=NOW + 60_000_000)
        assert isinstance(fresh, Owner) and not fresh.previous_unknown

    run(target, fn)


def test_inflight_record_of_dead_owner_stays_unknown_until_ttl(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        assert isinstance(await store.begin(SCOPE, "h1", 100, lease_s=10, now_us=NOW), Owner)
        late = await store.begin(SCOPE, "h1", 100, lease_s=10, now_us=NOW + 100_000_000)
        assert isinstance(late, Owner) and late.previous_unknown  # still unknown, not "new"
        assert await store.begin(SCOPE, "h2", now_us=NOW + 100_000_001) == Conflict()

    run(target, fn)


def test_wait_times_out_as_inflight(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        assert isinstance(await store.begin(SCOPE, "h1"), Owner)
        result = await store.wait(SCOPE, 0.05, content_hash="h1")
        assert isinstance(result, InFlight)
        assert await store.wait(SCOPE, 0.05, content_hash="h2") == Conflict()

    run(target, fn)


def test_complete_keeps_binary_body_and_headers(target: Target) -> None:
    response = StoredResponse(
        status=400, headers=(("x-a", "1"), ("x-a", "2")), body=bytes(range(256))
    )

    async def fn(store: StateStore) -> None:
        owner = await store.begin(SCOPE, "h1")
        assert isinstance(owner, Owner)
        assert await store.complete(SCOPE, response)  # no token: unconditional
        assert await store.begin(SCOPE, "h1") == Replay(response)
        assert not await store.complete(SCOPE, RESPONSE)  # already done: kept as first stored

    run(target, fn)
