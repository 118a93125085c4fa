"""Exchange cool-downs: Retry-After parsing (seconds and HTTP dates), defaults, caps, and the
shared pause across two AccountPauses on one real sqlite state store (two workers' view)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proxy.errors import AccountPaused
from proxy.guards.cooldowns import (
    CACHE_S,
    DEFAULT_418_S,
    DEFAULT_429_S,
    MAX_PAUSE_S,
    AccountPauses,
    Cooldown,
    cooldown,
    parse_retry_after,
)
from proxy.state import open_store

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120), (" 7 ", 7), ("0", 0),
    ("Tue, 14 Nov 2023 22:13:50 GMT", 30),       # RFC 9110 IMF-fixdate, 30 s after NOW
    ("Tuesday, 14-Nov-23 22:14:20 GMT", 60),     # obsolete RFC 850 form
    ("Tue, 14 Nov 2023 22:00:00 GMT", 0),        # in the past: no wait
    ("soon", None), ("-5", None), ("1.5", None), ("", None),
])
def test_parse_retry_after_seconds_and_dates(value: str, expected: int | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_cooldown_defaults_caps_and_any_retry_after() -> None:
    assert cooldown(429, (), NOW) == Cooldown(DEFAULT_429_S, 429, named=False)
    assert cooldown(418, (), NOW) == Cooldown(DEFAULT_418_S, 418, named=False)
    assert cooldown(429, (("Retry-After", "5"),), NOW) == Cooldown(5, 429, named=True)
    assert cooldown(429, (("retry-after", "garbage"),), NOW) == Cooldown(DEFAULT_429_S, 429, named=False)
    assert cooldown(503, (("Retry-After", "9"),), NOW) == Cooldown(9, 503, named=True)
    assert cooldown(429, (("Retry-After", "0"),), NOW) == Cooldown(1, 429, named=True)
    assert cooldown(418, (("Retry-After", "99999999"),), NOW) == Cooldown(MAX_PAUSE_S, 418, named=True)
    assert cooldown(200, (), NOW) is None
    assert cooldown(500, (), NOW) is None
    assert cooldown(503, (("Retry-After", "later"),), NOW) is None


def test_pause_is_shared_through_the_store_and_ends_by_itself(tmp_path: Path) -> None:
    async def run() -> None:
        clock = [NOW]
        store = open_store("sqlite", path=tmp_path / "state.db", url=None,
                           clock=lambda: int(clock[0] * 1_000_000))
        a = AccountPauses(store, clock=lambda: clock[0])
        b = AccountPauses(store, clock=lambda: clock[0])
        try:
            await b.check("main")  # caches "not paused"
            await a.pause("main", Cooldown(10, 429, named=True))
            with pytest.raises(AccountPaused) as exc:
                await a.check("main")
            assert exc.value.retry_after == 10 and exc.value.rule == "exchange_cooldown"
            clock[0] += CACHE_S + 0.05  # past the other worker's cache bound
            with pytest.raises(AccountPaused):
                await b.check("main")
            await b.check("other")  # other accounts are not paused
            # a shorter cool-down never shortens a longer one
            assert await a.pause("main", Cooldown(2, 429, named=True)) == NOW + 10
            clock[0] = NOW + 10.5
            await a.check("main")
            await b.check("main")
        finally:
            await store.close()

    asyncio.run(run())


def test_a_ban_is_not_shortened_by_another_workers_later_429(tmp_path: Path) -> None:
    """Worker a meets a 418 (3-day ban); worker b, which has not read the flag yet, meets a 429
    (30 s) just after: the ban stays in force for both."""
    async def run() -> None:
        clock = [NOW]
        store = open_store("sqlite", path=tmp_path / "state.db", url=None,
                           clock=lambda: int(clock[0] * 1_000_000))
        a = AccountPauses(store, clock=lambda: clock[0])
        b = AccountPauses(store, clock=lambda: clock[0])
        try:
            await a.pause("main", Cooldown(MAX_PAUSE_S, 418, named=True))
            assert await b.pause("main", Cooldown(30, 429, named=False)) == NOW + MAX_PAUSE_S
            clock[0] = NOW + 3600
            for worker in (a, b):
                with pytest.raises(AccountPaused) as exc:
                    await worker.check("main")
                assert exc.value.retry_after == MAX_PAUSE_S - 3600
        finally:
            await store.close()

    asyncio.run(run())


def test_pause_without_a_store_is_local() -> None:
    async def run() -> None:
        clock = [NOW]
        pauses = AccountPauses(None, clock=lambda: clock[0])
        await pauses.check("main")
        await pauses.pause("main", Cooldown(3, 418, named=False))
        with pytest.raises(AccountPaused):
            await pauses.check("main")
        clock[0] += 3.01
        await pauses.check("main")

    asyncio.run(run())
