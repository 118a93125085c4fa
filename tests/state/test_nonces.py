"""Nonces: strictly increasing per key across tasks, processes, restarts and kill -9."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from proxy.errors import NotReady
from proxy.state import LockTimeout, NonceUnitChanged
from tests.state.conftest import Target, kill_9, read_line, spawn

NOW_US = 1_700_000_000_000_000


def test_next_nonce_strictly_increasing_under_50_concurrent_tasks(target: Target) -> None:
    async def body() -> list[int]:
        store = target.open(clock=lambda: NOW_US)  # a stalled clock: only last + 1 can help
        try:
            batches = await asyncio.gather(
                *(asyncio.gather(*(store.next_nonce("k", "us") for _ in range(10)))
                  for _ in range(50))
            )  # fmt: skip
            return [n for batch in batches for n in batch]
        finally:
            await store.close()

    nonces = asyncio.run(body())
    assert len(nonces) == 500
    assert len(set(nonces)) == 500
    assert sorted(nonces) == list(range(NOW_US, NOW_US + 500))


def test_next_nonce_per_task_sequence_never_decreases(target: Target) -> None:
    async def body() -> list[list[int]]:
        store = target.open()
        try:

            async def one_task() -> list[int]:
                return [await store.next_nonce("k", "ms") for _ in range(20)]

            return list(await asyncio.gather(*(one_task() for _ in range(50))))
        finally:
            await store.close()

    sequences = asyncio.run(body())
    for seq in sequences:
        assert seq == sorted(seq) and len(set(seq)) == len(seq)
    flat = [n for seq in sequences for n in seq]
    assert len(set(flat)) == len(flat) == 1000


def test_next_nonce_unique_across_4_processes(target: Target) -> None:
    procs = [spawn(target, "nonces", "shared", "300") for _ in range(4)]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        outputs.append([int(line) for line in out.split()])
    for seq in outputs:
        assert len(seq) == 300
        assert all(a < b for a, b in itertools.pairwise(seq))  # never decreases
    flat = [n for seq in outputs for n in seq]
    assert len(set(flat)) == len(flat)  # no duplicates between processes


def test_next_nonce_never_reused_after_restart_even_if_clock_goes_back(target: Target) -> None:
    async def body() -> tuple[int, int]:
        first = target.open(clock=lambda: NOW_US + 5_000_000)
        last = 0
        for _ in range(10):
            last = await first.next_nonce("k", "us")
        await first.close()
        second = target.open(clock=lambda: NOW_US)  # new object, clock 5 s behind
        try:
            return last, await second.next_nonce("k", "us")
        finally:
            await second.close()

    last, after = asyncio.run(body())
    assert after == last + 1


def test_next_nonce_never_reused_after_kill_9(target: Target) -> None:
    proc = spawn(target, "nonces", "killed", "0")
    read_line(proc)
    time.sleep(0.2)
    kill_9(proc)
    assert proc.stdout is None or proc.stdout.closed
    # Whatever it printed (or allocated without printing) is below the persisted mark.

    async def body() -> tuple[int | None, int]:
        store = target.open(clock=lambda: 0)  # clock far in the past: only the mark protects
        try:
            mark = await store.last_nonce("killed")
            return mark, await store.next_nonce("killed", "us")
        finally:
            await store.close()

    mark, after = asyncio.run(body())
    assert mark is not None and mark > 0
    assert after == mark + 1


def test_next_nonce_never_below_nonces_printed_before_kill_9(target: Target) -> None:
    proc = spawn(target, "nonces", "killed2", "0")
    assert proc.stdout is not None
    read_line(proc)
    time.sleep(0.1)
    proc.send_signal(9)
    printed = [int(x) for x in proc.stdout.read().split()]
    proc.wait(timeout=10)
    proc.stdout.close()

    async def body() -> int:
        store = target.open(clock=lambda: 0)
        try:
            return await store.next_nonce("killed2", "us")
        finally:
            await store.close()

    assert asyncio.run(body()) > max(printed)


def test_raise_floor_never_lowers(target: Target) -> None:
    async def body() -> None:
        store = target.open(clock=lambda: NOW_US)
        try:
            assert await store.next_nonce("k", "us") == NOW_US
            assert await store.raise_floor("k", "us", NOW_US + 1000) == NOW_US + 1000
            assert await store.next_nonce("k", "us") == NOW_US + 1001
            assert await store.raise_floor("k", "us", 5) == NOW_US + 1001  # never lowers
            assert await store.next_nonce("k", "us") == NOW_US + 1002
            assert await store.raise_floor("fresh", "ms", 42) == 42  # a key never used
            assert await store.next_nonce("fresh", "ms") == NOW_US // 1000
        finally:
            await store.close()

    asyncio.run(body())


def test_next_nonce_exact_beyond_2_pow_53(target: Target) -> None:
    big = 2**62 + 1  # a double would round this; sqlite INTEGER and Lua strings must not

    async def body() -> None:
        store = target.open(clock=lambda: NOW_US)
        try:
            await store.raise_floor("big", "ns", big)
            assert await store.next_nonce("big", "ns") == big + 1
            assert await store.next_nonce("big", "ns") == big + 2
            assert await store.last_nonce("big") == big + 2
        finally:
            await store.close()

    asyncio.run(body())


def test_next_nonce_units_from_clock(target: Target) -> None:
    async def body() -> None:
        store = target.open(clock=lambda: NOW_US + 123_456)
        try:
            assert await store.next_nonce("s", "s") == (NOW_US + 123_456) // 1_000_000
            assert await store.next_nonce("ms", "ms") == (NOW_US + 123_456) // 1000
            assert await store.next_nonce("us", "us") == NOW_US + 123_456
            assert await store.next_nonce("ns", "ns") == (NOW_US + 123_456) * 1000
        finally:
            await store.close()

    asyncio.run(body())


def test_next_nonce_refuses_unit_change(target: Target) -> None:
    async def body() -> None:
        store = target.open(clock=lambda: NOW_US)
        try:
            first = await store.next_nonce("bfx", "ms")
            with pytest.raises(NonceUnitChanged) as err:
                await store.next_nonce("bfx", "us")
            assert isinstance(err.value, NotReady)
            assert "'ms'" in str(err.value) and "'us'" in str(err.value)
            with pytest.raises(NonceUnitChanged):
                await store.raise_floor("bfx", "us", 10**16)
            assert await store.last_nonce("bfx") == first  # nothing changed
            assert await store.next_nonce("bfx", "ms") == first + 1
        finally:
            await store.close()

    asyncio.run(body())


def test_next_nonce_rejects_unknown_unit(target: Target) -> None:
    async def body() -> None:
        store = target.open()
        try:
            with pytest.raises(ValueError, match="nonce unit"):
                await store.next_nonce("k", "minutes")  # type: ignore[arg-type]
        finally:
            await store.close()

    asyncio.run(body())


def test_key_lock_serialises_tasks(target: Target) -> None:
    async def body() -> list[str]:
        store = target.open()
        events: list[str] = []
        try:

            async def worker(i: int) -> None:
                async with store.key_lock("kraken", 5.0):
                    events.append(f"in{i}")
                    await asyncio.sleep(0.005)
                    events.append(f"out{i}")

            await asyncio.gather(*(worker(i) for i in range(10)))
            return events
        finally:
            await store.close()

    events = asyncio.run(body())
    for a, b in zip(events[::2], events[1::2], strict=True):
        assert a.startswith("in") and b == "out" + a[2:]  # never two holders at once


def test_key_lock_excludes_other_process_and_is_freed_by_kill_9(target: Target) -> None:
    proc = spawn(target, "hold_lock", "kraken", "0.5")
    assert read_line(proc) == "locked"

    async def try_lock(timeout_s: float) -> float:
        store = target.open()
        try:
            t0 = time.monotonic()
            async with store.key_lock("kraken", timeout_s):
                return time.monotonic() - t0
        finally:
            await store.close()

    try:
        with pytest.raises(LockTimeout):
            asyncio.run(try_lock(0.2))  # held, and kept past its 0.5 s lease by extension
        time.sleep(0.5)
        with pytest.raises(LockTimeout):
            asyncio.run(try_lock(0.1))
    finally:
        kill_9(proc)
    waited = asyncio.run(try_lock(5.0))
    assert waited < 1.0  # sqlite: at once (kernel frees flock); redis: within the 0.5 s lease
