"""Rolling-window counters (exact decimals) and shared flags with TTL."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from proxy.state import StateStore
from tests.state.conftest import Target

NOW = 1_700_000_000_000_000


def run(target: Target, fn: object) -> None:
    async def body() -> None:
        store = target.open()
        try:
            await fn(store)  # type: ignore[operator]
        finally:
            await store.close()

    asyncio.run(body())


def test_add_to_window_is_exact(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        total = Decimal(0)
        for _ in range(10):
            total = await store.add_to_window("notional", Decimal("0.1"), 60, now_us=NOW)
        assert total == Decimal("1")  # a float sum would give 0.9999999999999999
        big = Decimal("123456789012345678901234567.000000000000000001")
        assert await store.add_to_window("big", big, 60, now_us=NOW) == big
        assert await store.add_to_window("big", big, 60, now_us=NOW) == Decimal(
            "246913578024691357802469134.000000000000000002"
        )
        assert await store.add_to_window("int", 7, 60, now_us=NOW) == 7

    run(target, fn)


def test_add_to_window_rolls_old_amounts_out(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        assert await store.add_to_window("w", Decimal("5"), 10, now_us=NOW) == 5
        assert await store.add_to_window("w", Decimal("2.5"), 10, now_us=NOW + 5_000_000) == 7.5
        assert await store.add_to_window("w", 1, 10, now_us=NOW + 10_000_000) == Decimal("3.5")
        assert await store.add_to_window("w", 0, 10, now_us=NOW + 30_000_000) == 0

    run(target, fn)


def test_add_to_window_limit_refuses_without_adding(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        lim = Decimal("10")
        assert await store.add_to_window("b", Decimal("6"), 60, limit=lim, now_us=NOW) == 6
        assert await store.add_to_window("b", Decimal("5"), 60, limit=lim, now_us=NOW) == 11
        assert await store.add_to_window("b", Decimal("4"), 60, limit=lim, now_us=NOW) == 10
        assert await store.add_to_window("b", 0, 60, now_us=NOW) == 10

    run(target, fn)


def test_add_to_window_limit_holds_under_concurrency(target: Target) -> None:
    async def body() -> None:
        stores = [target.open() for _ in range(3)]
        try:
            results = await asyncio.gather(
                *(stores[i % 3].add_to_window("c", 1, 60, limit=25, now_us=NOW)
                  for i in range(60))
            )  # fmt: skip
            assert sum(r <= 25 for r in results) == 25  # exactly the budget was admitted
        finally:
            for s in stores:
                await s.close()

    asyncio.run(body())


@pytest.mark.parametrize("bad", [Decimal("-1"), Decimal("NaN"), Decimal("1e-19"), 0.5])
def test_add_to_window_refuses_bad_amounts(target: Target, bad: object) -> None:
    async def fn(store: StateStore) -> None:
        with pytest.raises((ValueError, TypeError)):
            await store.add_to_window("x", bad, 60)  # type: ignore[arg-type]

    run(target, fn)


def test_flag_set_get_expire_clear(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        assert await store.get_flag("pause:binance-main") is None
        await store.set_flag("pause:binance-main", "429 cool-down", 30, now_us=NOW)
        assert await store.get_flag("pause:binance-main", now_us=NOW + 29_999_999) == (
            "429 cool-down"
        )
        assert await store.get_flag("pause:binance-main", now_us=NOW + 30_000_000) is None
        await store.set_flag("kill", "a:b: c")  # no TTL, colons in the value
        assert await store.get_flag("kill", now_us=NOW * 2) == "a:b: c"
        await store.clear_flag("kill")
        assert await store.get_flag("kill") is None

    run(target, fn)


def test_flag_shared_between_store_objects(target: Target) -> None:
    async def body() -> None:
        a, b = target.open(), target.open()
        try:
            await a.set_flag("kill", "on", 60)
            assert await b.get_flag("kill") == "on"
        finally:
            await a.close()
            await b.close()

    asyncio.run(body())


def test_extend_flag_keeps_the_later_end(target: Target) -> None:
    """A 3-day ban is not shortened by a 30 s cool-down met later; a longer one extends it."""
    async def fn(store: StateStore) -> None:
        day3 = 3 * 86400
        assert await store.extend_flag("pause", "ban", day3, now_us=NOW) == "ban"
        assert await store.extend_flag("pause", "429", 30, now_us=NOW + 1_000_000) == "ban"
        assert await store.get_flag("pause", now_us=NOW + 60_000_000) == "ban"
        assert await store.get_flag("pause", now_us=NOW + day3 * 1_000_000) is None
        # a shorter first, then a longer: the longer wins
        assert await store.extend_flag("p2", "short", 30, now_us=NOW) == "short"
        assert await store.extend_flag("p2", "long", 120, now_us=NOW) == "long"
        assert await store.get_flag("p2", now_us=NOW + 60_000_000) == "long"
        # an expired flag is replaced, whatever its value
        assert await store.extend_flag("p2", "again", 5, now_us=NOW + 200_000_000) == "again"
        # a flag without an end (until cleared) is kept
        await store.set_flag("kill", "on")
        assert await store.extend_flag("kill", "x", 10, now_us=NOW) == "on"
        # ends of different lengths compare as numbers, not as text
        assert await store.extend_flag("s1", "a", 0.05, now_us=950_000) == "a"   # ends 1_000_000
        assert await store.extend_flag("s1", "b", 0.009, now_us=990_000) == "a"  # ends 999_000
        assert await store.extend_flag("s2", "a", 0.009, now_us=990_000) == "a"  # ends 999_000
        assert await store.extend_flag("s2", "b", 0.05, now_us=950_000) == "b"   # ends 1_000_000

    run(target, fn)


def test_extend_flag_keeps_the_latest_end_under_concurrency(target: Target) -> None:
    """Several workers (store objects) race to pause the same account with different
    cool-downs: the one that ends last is in force afterwards."""
    async def body() -> None:
        stores = [target.open() for _ in range(3)]
        try:
            ttls = [30, 259_200, 120, 30, 60, 1, 259_100, 45] * 4
            await asyncio.gather(*(stores[i % 3].extend_flag("pause", f"v{ttl}", ttl, now_us=NOW)
                                   for i, ttl in enumerate(ttls)))
            assert await stores[0].get_flag("pause", now_us=NOW + 259_150_000_000) == "v259200"
        finally:
            for s in stores:
                await s.close()

    asyncio.run(body())
