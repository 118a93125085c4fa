"""What one order waits for before it may be sent: its claim, weight spend and decision record
made durable by the worker's group commit, one order at a time (the 1-connection case, where
no other order shares the batch), on each backend, beside the disk's bare fdatasync.

    python bench/bench_commit.py [--redis-url URL] [--n 2000] [--nonce]

--nonce: each order also allocates a nonce for one key in its batch (a nonce exchange's order).

Without --redis-url it starts a throw-away local Redis (tests/support/redis_server.py). The
figures bound the proxy's added latency at one connection from below: the rest is the
pipeline's Python (bench/bench_proxy.py measures the whole). Figures only: nothing here
asserts a target.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy import fsync_ms

from proxy.audit.writer import AuditWriter
from proxy.guards.rate_limits import open_limiter
from proxy.model.sensitive import Secret
from proxy.state import IdempotencyScope, open_store
from proxy.state.batches import group_commit
from proxy.state.group_commit import NonceRequest, Spend


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (f"p50 {statistics.median(ordered) * 1000:.3f} ms, p99 "
            f"{ordered[int(len(ordered) * 0.99) - 1] * 1000:.3f} ms")


async def claims(backend: str, where: Path, redis_url: str | None, n: int, spend: bool,
                 nonce: bool = False) -> list[float]:
    """``n`` orders one after another through a real group commit: claim (with the weight spend
    when ``spend``, a nonce of one key when ``nonce``) and decision record, each awaited until
    durable."""
    (where / "audit").mkdir(parents=True)
    path = where / "state.db" if backend == "sqlite" else None
    store = open_store(backend, path=path, url=redis_url, prefix=f"bench{secrets.token_hex(4)}:")
    limiter = open_limiter(backend, path=path, url=redis_url)
    audit = AuditWriter(where / "audit", Secret(secrets.token_hex(32)), "bench")
    await audit.start()
    commit = group_commit(store, limiter, audit)
    assert commit is not None
    took = []
    try:
        for i in range(n):
            coid = f"o{i}"
            record = {"request_id": coid, "phase": "decision", "decision": "allow", "client": "bot",
                      "account": "main", "client_order_id": coid, "rule": "allow"}
            t0 = time.perf_counter()
            claimed = await commit.claim(IdempotencyScope("bot", "main", coid), "1:h", 3600, lease_s=30,
                                         spend=Spend("weight|main", 10**9, 60, 1) if spend else None,
                                         record=record,
                                         nonce=NonceRequest("kraken:bench", "us", time.time_ns() // 1000)
                                         if nonce else None)
            took.append(time.perf_counter() - t0)
            assert claimed.recorded
    finally:
        await audit.close()
        await store.close()
        await limiter.close()
    return took


async def main(n: int, redis_url: str, tmp: Path, nonce: bool) -> None:
    p50, p99 = fsync_ms(tmp, n)  # a small append and its fdatasync: the least any durable order waits
    print(f"fdatasync alone:                      p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    for backend in ("sqlite", "redis"):
        for spend in (True, False):
            where = tmp / f"{backend}-{spend}"
            took = await claims(backend, where, redis_url if backend == "redis" else None, n, spend,
                                nonce)
            label = f"{backend}, {'with' if spend else 'without'} weight spend{', nonce' if nonce else ''}:"
            print(f"one durable order, {label:<37} {_ms(took)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--nonce", action="store_true", help="each order allocates a nonce too")
    ns = parser.parse_args()
    with ExitStack() as stack:
        url = ns.redis_url
        if url is None:
            from tests.support.redis_server import RedisServer

            url = stack.enter_context(RedisServer()).url
        import uvloop  # the proxy's own event loop

        uvloop.run(main(ns.n, url, Path(stack.enter_context(tempfile.TemporaryDirectory())), ns.nonce))
