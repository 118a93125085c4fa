"""The sliding window counter: the pure decision, and the memory and sqlite limiters (the
sqlite one shared by two processes, as by two workers)."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from proxy.guards.rate_limits import Hit, MemoryLimiter, SqliteLimiter, decide

S = 1_000_000


def test_decide_within_one_window_is_exact() -> None:
    assert decide(0, 4, 10 * S // 2, 10 * S, 5, 1).allowed
    assert not decide(0, 5, 10 * S // 2, 10 * S, 5, 1).allowed


def test_decide_weights_the_previous_window_by_its_overlap() -> None:
    # 3 s into a 10 s window: 70% of the previous window still overlaps.
    assert decide(10, 0, 3 * S, 10 * S, 10, 3).allowed          # 7 + 0 + 3 = 10
    assert not decide(10, 0, 3 * S, 10 * S, 10, 4).allowed      # 7 + 0 + 4 = 11
    # wait until 10*(7-t)/10 + 4 <= 10, i.e. t >= 1 s
    assert decide(10, 0, 3 * S, 10 * S, 10, 4) == Hit(False, 1)


def test_decide_retry_after_when_the_current_window_is_full() -> None:
    # 5 of 5 used 2 s into a 10 s window: 8 s to the next window, then 2 s more for the
    # now-previous 5 to decay to 4.
    assert decide(0, 5, 2 * S, 10 * S, 5, 1) == Hit(False, 10)
    assert decide(0, 0, 0, 60 * S, 5, 6) == Hit(False, 60)  # a cost over the limit never fits


def test_memory_limiter_counts_cost_and_rolls_windows() -> None:
    now = [100 * S]
    limiter = MemoryLimiter(lambda: now[0])

    async def run() -> list[bool]:
        out = [(await limiter.hit("k", 50, 60, 20)).allowed for _ in range(3)]
        now[0] += 120 * S  # two windows later: nothing overlaps
        out.append((await limiter.hit("k", 50, 60, 20)).allowed)
        out.append((await limiter.hit("other", 50, 60, 50)).allowed)
        return out

    assert asyncio.run(run()) == [True, True, False, True, True]


def _hammer(path: str, n: int, queue: multiprocessing.Queue[int]) -> None:
    async def run() -> int:
        limiter = SqliteLimiter(Path(path))
        try:
            return sum([(await limiter.hit("client", 25, 3600)).allowed for _ in range(n)])
        finally:
            await limiter.close()

    queue.put(asyncio.run(run()))


@pytest.mark.timeout(120)
def test_sqlite_limiter_is_exact_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path / "limits.db"), 20, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    allowed = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sum(allowed) == 25, allowed
