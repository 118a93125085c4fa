"""The Redis weight budget: our Lua sliding window counter (proxy.state.redis_scripts) against
a real Redis server, and the group commit's Redis batch that claims and spends in one script
per claim, all in one round trip.

Truth is independent of the script: each case's answer is computed by hand in its comment, and
the pure ``decide`` must give it too; a seeded sweep then checks the script against ``decide``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from proxy.audit.writer import AuditWriter
from proxy.errors import NotReady
from proxy.guards.rate_limits import Hit, RedisLimiter, decide
from proxy.model.sensitive import Secret
from proxy.state import IdempotencyScope, Owner, Replay, StoredResponse
from proxy.state.batches import RedisBatches
from proxy.state.group_commit import Claim, Complete, Spend
from tests.state.conftest import Target
from tests.support.redis_server import RedisServer

S = 1_000_000
T0 = 1_764_979_200 * S  # a fixed clock, at the start of a day (UTC): nothing depends on when tests run

# (prev, cur, elapsed_us, window_us, limit, cost, the answer worked out by hand)
CASES: list[tuple[int, int, int, int, int, int, Hit]] = [
    (0, 4, 5 * S, 10 * S, 5, 1, Hit(True)),           # 4 + 1 <= 5
    (0, 5, 5 * S, 10 * S, 5, 1, Hit(False, 7)),       # 5 s to the next window, then 5*(10-t)/10 + 1 <= 5: t >= 2
    (10, 0, 3 * S, 10 * S, 10, 3, Hit(True)),         # 70% of 10 = 7, + 3 = 10: exactly the limit
    (10, 0, 3 * S, 10 * S, 10, 4, Hit(False, 1)),     # 10*(7-t)/10 + 4 <= 10: t >= 1
    (0, 5, 2 * S, 10 * S, 5, 1, Hit(False, 10)),      # 8 s, then 5*(10-t)/10 + 1 <= 5: t >= 2
    (0, 0, 0, 60 * S, 5, 6, Hit(False, 60)),          # a cost over the limit never fits: a window
    # 3 s to the next window, then 7*(7-t)/7 + 1 <= 7: t >= 1, 4 s in all (floats said 5)
    (0, 7, 4 * S, 7 * S, 7, 1, Hit(False, 4)),
    (6, 2, 30 * S, 60 * S, 6, 1, Hit(True)),          # 6 * 0.5 = 3, + 2 + 1 = 6
    (6, 2, 30 * S, 60 * S, 6, 2, Hit(False, 10)),     # 6*(30-t)/60 + 4 <= 6: t >= 10
    (3, 0, 1, 3 * S, 2, 1, Hit(False, 2)),            # 3*(3-1us)/3 + 1 <= 2: t >= 2 s - 1 us: 2
    (3, 0, 2 * S, 3 * S, 2, 1, Hit(True)),            # 3 * 1/3 + 1 = 2: exactly the limit
    (3, 0, 2 * S - 1, 3 * S, 2, 1, Hit(False, 1)),    # 1 us early: 3*(1 s + 1 us - t)/3 s + 1 <= 2 at t >= 1 us
]


@pytest.fixture()
def prefix() -> str:
    return f"t{secrets.token_hex(6)}:limits"


def test_the_cases_by_hand_hold_for_decide() -> None:
    for prev, cur, elapsed, window, limit, cost, expected in CASES:
        assert decide(prev, cur, elapsed, window, limit, cost) == expected, (prev, cur, elapsed)


async def _seed(client: Any, counter: str, bucket: int, prev: int, cur: int) -> None:
    await client.delete(counter)
    await client.hset(counter, mapping={"b": bucket, "p": prev, "c": cur})


async def _counts(client: Any, counter: str) -> tuple[int, int, int]:
    b, p, c = await client.hmget(counter, "b", "p", "c")
    return int(b), int(p), int(c)


def _script_answers(url: str, prefix: str, cases: list[tuple[int, int, int, int, int, int]]) -> list[
        tuple[Hit, tuple[int, int, int], tuple[int, int, int]]]:
    """For each case: the script's answer, the counter before and after it."""
    now = [0]

    async def run() -> list[tuple[Hit, tuple[int, int, int], tuple[int, int, int]]]:
        limiter = RedisLimiter(url, prefix=prefix, clock_us=lambda: now[0])
        client = aioredis.Redis.from_url(url)
        out = []
        try:
            for i, (prev, cur, elapsed, window, limit, cost) in enumerate(cases):
                key = f"case{i}"
                counter = f"{prefix}:{window // S}|{key}"
                bucket = T0 // window
                await _seed(client, counter, bucket, prev, cur)
                now[0] = bucket * window + elapsed
                before = await _counts(client, counter)
                hit = await limiter.hit(key, limit, window // S, cost)
                out.append((hit, before, await _counts(client, counter)))
        finally:
            await client.aclose()
            await limiter.close()
        return out

    return asyncio.run(run())


def test_the_lua_counter_gives_the_answers_worked_out_by_hand(redis_server: RedisServer, prefix: str) -> None:
    answers = _script_answers(redis_server.url, prefix, [c[:6] for c in CASES])
    for (prev, cur, _, _, _, cost, expected), (hit, before, after) in zip(CASES, answers, strict=True):
        assert hit == expected, (prev, cur, cost)
        bucket = before[0]
        assert after == ((bucket, prev, cur + cost) if expected.allowed else before)  # a refusal writes nothing


def test_the_lua_counter_agrees_with_decide_on_a_sweep(redis_server: RedisServer, prefix: str) -> None:
    rng = random.Random(13)
    cases = []
    for _ in range(400):
        window = rng.choice([1, 2, 3, 7, 10, 60, 3600, 86_400]) * S
        limit = rng.choice([1, 2, 5, 7, 25, 1200, 6000, 100_000])
        prev, cur = rng.randint(0, limit + 2), rng.randint(0, limit + 2)
        elapsed = rng.choice([0, 1, window // 2, window - 1, rng.randrange(window)])
        cases.append((prev, cur, elapsed, window, limit, rng.choice([1, 2, 5, 20, limit, limit + 1])))
    answers = _script_answers(redis_server.url, prefix, cases)
    for case, (hit, _, _) in zip(cases, answers, strict=True):
        assert hit == decide(*case), case


def test_the_counter_rolls_windows_as_the_other_backends_do(redis_server: RedisServer, prefix: str) -> None:
    """The stored window one behind becomes "previous"; two behind, nothing; ahead (a clock went
    back), the stored window still counts, from its start."""
    window = 10 * S
    bucket = T0 // window
    now = [0]

    async def run() -> list[Hit]:
        limiter = RedisLimiter(redis_server.url, prefix=prefix, clock_us=lambda: now[0])
        client = aioredis.Redis.from_url(redis_server.url)
        counter = f"{prefix}:10|k"
        try:
            out = []
            await _seed(client, counter, bucket - 1, 99, 10)
            now[0] = bucket * window + 3 * S  # previous = 10 at 70%: 7 + 3 = 10 fits, 7 + 4 does not
            out += [await limiter.hit("k", 10, 10, 4), await limiter.hit("k", 10, 10, 3)]
            await _seed(client, counter, bucket - 2, 10, 10)
            out.append(await limiter.hit("k", 10, 10, 10))  # nothing overlaps: the whole limit
            await _seed(client, counter, bucket + 1, 0, 10)
            out.append(await limiter.hit("k", 10, 10, 1))  # the stored (later) window is full
            return out
        finally:
            await client.aclose()
            await limiter.close()

    # 4 does not fit: 10*(7-t)/10 + 4 <= 10 at t >= 1; the full later window: wait all of it, then
    # 10*(10-t)/10 + 1 <= 10 at t >= 1: 11 s
    assert asyncio.run(run()) == [Hit(False, 1), Hit(True), Hit(True), Hit(False, 11)]


def _hammer(url: str, prefix: str, n: int, queue: multiprocessing.Queue[tuple[int, int]]) -> None:
    async def run() -> tuple[int, int]:
        limiter = RedisLimiter(url, prefix=prefix, clock_us=lambda: T0)
        try:
            ones = await asyncio.gather(*(limiter.hit("ones", 25, 3600) for _ in range(n)))
            twos = await asyncio.gather(*(limiter.hit("twos", 25, 3600, 2) for _ in range(n)))
            return sum(h.allowed for h in ones), sum(h.allowed for h in twos)
        finally:
            await limiter.close()

    queue.put(asyncio.run(run()))


@pytest.mark.timeout(120)
def test_concurrent_hits_from_several_processes_never_exceed_the_limit(redis_server: RedisServer,
                                                                        prefix: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[tuple[int, int]] = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(redis_server.url, prefix, 20, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    allowed = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    # 60 hits of 1 in a budget of 25: exactly 25; 60 of 2: 12 (24 of 25, a 13th would make 26)
    assert sum(a for a, _ in allowed) == 25 and sum(b for _, b in allowed) == 12, allowed


def test_the_limiter_fails_closed_while_redis_is_down_and_recovers(prefix: str) -> None:
    with RedisServer() as server:
        async def run() -> None:
            limiter = RedisLimiter(server.url, prefix=prefix, clock_us=lambda: T0)
            try:
                assert await limiter.hit("k", 2, 60) == Hit(True)
                server.stop()
                with pytest.raises(NotReady, match="rate-limit store unreachable"):
                    await limiter.hit("k", 2, 60)
                server.start()  # no persistence: the counter starts empty, scripts are gone
                # full at the window's start: 60 s, then 2*(60-t)/60 + 1 <= 2 at t >= 30
                assert [await limiter.hit("k", 2, 60) for _ in range(3)] == [Hit(True), Hit(True), Hit(False, 90)]
            finally:
                await limiter.close()

        asyncio.run(run())


def _scope(coid: str) -> IdempotencyScope:
    return IdempotencyScope("bot", "main", coid)


@pytest.fixture()
def sends(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many times this process wrote to a Redis socket: one write per round trip (a
    pipeline packs all its commands into one)."""
    count = [0]
    original = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        count[0] += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    yield count


def test_one_batch_claims_and_spends_in_one_round_trip(redis_server: RedisServer, tmp_path: Path,
                                                       prefix: str, sends: list[int]) -> None:
    """Budget A (2 a minute) gets four orders, budget B (10) two: the two A orders queued last
    are refused and keep no claim; a replay and a retry whose earlier attempt is unknown spend
    nothing; a completion rides along; all of it is one write to Redis."""
    target = Target("redis", redis_server.url, f"t{secrets.token_hex(6)}:")
    key = Secret(secrets.token_hex(32))
    now = [T0 + 15 * S]  # 15 s into a minute window

    async def run() -> None:
        store: Any = target.open(clock=lambda: now[0])
        limiter = RedisLimiter(redis_server.url, prefix=prefix, clock_us=lambda: now[0])
        (tmp_path / "audit").mkdir()
        audit = AuditWriter(tmp_path / "audit", key, "w1")
        await audit.start()
        client = aioredis.Redis.from_url(redis_server.url)
        batches = RedisBatches(store, limiter)
        loop = asyncio.get_running_loop()

        def claim(coid: str, budget: str, limit: int, record: bool = True) -> Claim:
            return Claim(_scope(coid), "h", 60, 30, Spend(budget, limit, 60, 1),
                         {"request_id": coid, "phase": "decision"} if record else None,
                         loop.create_future())

        try:
            # before the batch: "done" was completed, "lost" was claimed and its lease ran out
            done = await store.begin(_scope("done"), "h", lease_s=30)
            await store.complete(_scope("done"), StoredResponse(200, (), b"ok"), token=done.token)
            await store.begin(_scope("lost"), "h", lease_s=1, now_us=now[0] - 2 * S)
            pending = await store.begin(_scope("pending"), "h", lease_s=30)
            await store.pipeline([store.abandon_call(_scope("warm"), None)])  # the scripts are loaded
            ops: list[Any] = [claim("a1", "A", 2), claim("b1", "B", 10), claim("a2", "A", 2),
                              claim("a3", "A", 2), claim("done", "A", 2), claim("lost", "A", 2),
                              claim("b2", "B", 10), claim("a4", "A", 2),
                              Complete(_scope("pending"), StoredResponse(201, (), b"x"), pending.token, 60)]
            stats = await client.info("commandstats")
            evalsha = stats.get("cmdstat_evalsha", {}).get("calls", 0)
            sends[0] = 0
            await batches.apply(ops, audit)
            assert sends[0] == 1  # one round trip for nine scripts
            stats = await client.info("commandstats")
            assert stats["cmdstat_evalsha"]["calls"] - evalsha == 9  # eight claims, one completion

            by_id = {op.scope.client_order_id: op for op in ops if isinstance(op, Claim)}
            assert {c for c, op in by_id.items() if op.refused is not None} == {"a3", "a4"}
            # A holds 2 of 2, 15 s in: 45 s to the next window, then 2*(60-t)/60 + 1 <= 2 at t >= 30
            assert by_id["a3"].refused is not None and by_id["a3"].refused.retry_after == 75
            assert decide(0, 2, 15 * S, 60 * S, 2, 1) == Hit(False, 75)
            assert all(isinstance(by_id[c].result, Owner) and by_id[c].error is None
                       for c in ("a1", "a2", "b1", "b2", "a3", "a4"))
            assert isinstance(by_id["done"].result, Replay)
            lost = by_id["lost"].result
            assert isinstance(lost, Owner) and lost.previous_unknown and by_id["lost"].refused is None
            assert {c for c, op in by_id.items() if op.recorded} == {"a1", "a2", "b1", "b2"}
            # the refused ids are free: a retry owns them afresh
            for coid in ("a3", "a4"):
                again = await store.begin(_scope(coid), "h", lease_s=30)
                assert isinstance(again, Owner) and not again.previous_unknown
            replay = await store.begin(_scope("pending"), "h", lease_s=30)
            assert isinstance(replay, Replay) and replay.response.body == b"x"
            # the weight spent is what the owners spent, in the counter RedisLimiter.hit uses
            assert (await _counts(client, f"{prefix}:60|A"))[1:] == (0, 2)
            assert (await _counts(client, f"{prefix}:60|B"))[1:] == (0, 2)
            assert await limiter.hit("B", 10, 60, 8) == Hit(True)
            assert not (await limiter.hit("B", 10, 60, 1)).allowed
        finally:
            await client.aclose()
            await audit.close()
            await limiter.close()
            await store.close()

    asyncio.run(run())
