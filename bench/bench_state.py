"""State-store figures per backend: nonce allocations/s, idempotency overhead (p50/p99), and
ordered sends/s on nonce exchanges for a key pool of 1, 2 and 4 keys.

    python bench/bench_state.py [--redis-url URL] [--n 2000] [--rtt-ms 20] [--seconds 2]

Without --redis-url it starts a throw-away local Redis (tests/support/redis_server.py). Also
reports the worst event-loop lag (overshoot of a 1 ms sleep) during the 50-task run: the sqlite
backend must not block the loop (its SQL runs on a thread); at saturation the lag is mostly the
loop being busy with 50 ready tasks, not a blocking call.
The ordered-send figure replays what the pipeline does for Kraken and Bitfinex (lease a key of
the pool, take its lock, allocate a nonce, hold the lock for a simulated exchange round trip of
``--rtt-ms``) with 50 concurrent bots: one key is bounded by 1000 / rtt sends/s, N keys by N times
that. Figures only: nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.exchanges.base import Credentials
from proxy.keys.pool import KeyPool
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey
from proxy.state import IdempotencyScope, Owner, StateStore, StoredResponse
from proxy.state.redis_store import RedisStateStore
from proxy.state.sqlite_store import SqliteStateStore

RESPONSE = StoredResponse(200, (("content-type", "application/json"),), b'{"orderId":1}' * 20)


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def loop_lag(stop: asyncio.Event, worst: list[float]) -> None:
    """Worst overshoot of a 1 ms sleep: how long the event loop could not run us."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        worst[0] = max(worst[0], time.perf_counter() - t0 - 0.001)


async def bench(name: str, store: StateStore, n: int) -> None:
    key = f"bench-{uuid.uuid4().hex}"
    await store.next_nonce(key, "us")  # warm up (connections, scripts)

    t0 = time.perf_counter()
    for _ in range(n):
        await store.next_nonce(key, "us")
    seq_rate = n / (time.perf_counter() - t0)

    stop, worst = asyncio.Event(), [0.0]
    lag = asyncio.create_task(loop_lag(stop, worst))
    per_task = max(1, n // 50)
    t0 = time.perf_counter()
    await asyncio.gather(
        *(_repeat(per_task, lambda: store.next_nonce(key, "us")) for _ in range(50))
    )
    conc_rate = 50 * per_task / (time.perf_counter() - t0)
    stop.set()
    await lag

    lat: list[float] = []
    for i in range(n):
        scope = IdempotencyScope("bench", "acct", f"{key}-{i}")
        t0 = time.perf_counter()
        owner = await store.begin(scope, "h")
        assert isinstance(owner, Owner)
        await store.complete(scope, RESPONSE, token=owner.token)
        lat.append((time.perf_counter() - t0) * 1000)

    lock_lat: list[float] = []
    for _ in range(min(n, 500)):
        t0 = time.perf_counter()
        async with store.key_lock(key, 5.0):
            pass
        lock_lat.append((time.perf_counter() - t0) * 1000)

    print(
        f"{name:<14} nonce/s 1 task {seq_rate:8,.0f}  50 tasks {conc_rate:8,.0f}"
        f"  (max loop lag {worst[0] * 1000:5.2f} ms) | begin+complete ms"
        f" p50 {statistics.median(lat):.3f} p99 {pct(lat, 0.99):.3f}"
        f" | key_lock ms p50 {statistics.median(lock_lat):.3f} p99 {pct(lock_lat, 0.99):.3f}"
    )


async def ordered(name: str, store: StateStore, rtt_ms: float, seconds: float) -> None:
    """Ordered sends/s through a per-key lock held for one simulated round trip, per pool size."""
    figures = []
    for keys in (1, 2, 4):
        prefix = f"bench-pool-{uuid.uuid4().hex[:8]}"
        pool = KeyPool(tuple(f"{prefix}-{i}" for i in range(keys)))
        for i in range(keys):
            pool.set(i, Credentials(f"{prefix}-{i}", HmacKey(Secret("bench")), version=1))
        done = [0]
        deadline = time.perf_counter() + seconds

        async def bot(pool: KeyPool = pool, done: list[int] = done, deadline: float = deadline) -> None:
            while time.perf_counter() < deadline:
                with pool.lease() as (_, creds):
                    async with store.key_lock(creds.api_key, 30.0):
                        await store.next_nonce(creds.api_key, "us")
                        await asyncio.sleep(rtt_ms / 1000)
                done[0] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(bot() for _ in range(50)))
        figures.append(f"{keys} key{'s' if keys > 1 else ' '} {done[0] / (time.perf_counter() - t0):6.1f}")
    ideal = 1000 / rtt_ms
    print(f"{name:<14} ordered sends/s at {rtt_ms:g} ms round trip (ideal {ideal:.0f} per key): "
          + ", ".join(figures))


async def _repeat(n: int, fn: Callable[[], Awaitable[object]]) -> None:
    for _ in range(n):
        await fn()


async def main(args: argparse.Namespace, redis_url: str, tmp: Path) -> None:
    for sync in ("FULL", "NORMAL"):
        store = SqliteStateStore(tmp / f"state-{sync}.db", synchronous=sync)
        try:
            await bench(f"sqlite {sync}", store, args.n)
            await ordered(f"sqlite {sync}", store, args.rtt_ms, args.seconds)
        finally:
            await store.close()
    redis = RedisStateStore(redis_url, prefix=f"bench{uuid.uuid4().hex[:8]}:")
    try:
        await bench("redis", redis, args.n)
        await ordered("redis", redis, args.rtt_ms, args.seconds)
    finally:
        await redis.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="simulated exchange round trip")
    parser.add_argument("--seconds", type=float, default=2.0, help="per ordered-send measurement")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    ns = parser.parse_args()
    with ExitStack() as stack:
        url = ns.redis_url
        if url is None:
            from tests.support.redis_server import RedisServer

            url = stack.enter_context(RedisServer()).url
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if ns.no_uvloop:
            asyncio.run(main(ns, url, tmpdir))
        else:
            import uvloop  # the proxy's own event loop

            uvloop.run(main(ns, url, tmpdir))
