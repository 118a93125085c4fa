"""Shared rate limiters: a sliding window counter per key, the same algorithm on every backend.

Why a sliding window *counter* (two fixed windows, the previous one weighted by how much of it
still overlaps the last ``window``), not a log of every hit: it is O(1) per request whatever
the limit (a weight budget of 6,000 a minute at thousands of requests a second would
make a log thousands of rows long), and it has no fixed-window boundary burst. Its estimate
assumes the previous window's hits were spread evenly; the error is bounded by that window's
count and is zero for a burst inside one window.

Backends, all shared by every worker of a host (and, for Redis, every host):

- ``redis``: our Lua script (proxy.state.redis_scripts.WINDOW_HIT_FN, ``decide`` in Lua,
  integers, atomic per key) on the redis-py asyncio client, so the event loop never blocks.
  The group commit runs the same function inside each claim's script (CLAIM_SPEND_LUA), so a
  batch claims and spends in one pipelined round trip, and the step-by-step ``hit`` (cancels,
  reads, the proxy's own calls) shares the same counter (``{prefix}:{window_s}|{key}``, a hash
  of bucket, previous and current count). Time is the Redis server's clock, one for every
  host. Exact while a count times the window in microseconds stays below 2**53 (150 million
  a minute, 100,000 a day; Lua numbers are doubles), rounded beyond;
- ``sqlite``: a small file of its own next to the state store (``state.db.limits``), one
  ``BEGIN IMMEDIATE`` transaction per hit on a dedicated thread, without fsync: a counter lost
  in a power cut only forgets the last moments of traffic, and the state store's durable
  transactions never wait behind it;
- ``memory``: one process only (no state store configured; unit tests).

Every backend fails closed: an unreachable store raises NotReady and nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from proxy.errors import NotReady


@dataclass(frozen=True)
class Hit:
    """The limiter's answer: allowed, or refused with how long to wait (whole seconds, >= 1)."""

    allowed: bool
    retry_after: int = 0


ALLOWED = Hit(True)


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def decide(prev: int, cur: int, elapsed_us: int, window_us: int, limit: int, cost: int) -> Hit:
    """Sliding window counter, pure: ``prev`` and ``cur`` are the previous and current fixed
    windows' counts, ``elapsed_us`` how far into the current window we are. Allowed when the
    weighted count plus ``cost`` stays within ``limit``; otherwise the wait until it would.
    Integers only (the weighted test multiplied out by ``window_us``), so the Redis script
    (proxy.state.redis_scripts.WINDOW_HIT_FN) gives the same answers exactly."""
    remaining_us = window_us - elapsed_us
    room = limit - cur - cost  # what the current window leaves for the previous one's share
    if prev * remaining_us <= room * window_us:  # prev * remaining / window + cur + cost <= limit
        return ALLOWED
    if cost > limit:
        return Hit(False, max(1, _ceil_div(window_us, 1_000_000)))
    if room < 0:
        # Wait for the next window, then for the current count (then "previous") to decay:
        # remaining + window * (cur - (limit - cost)) / cur.
        wait_num, wait_den = remaining_us * cur - room * window_us, cur
    else:  # remaining - room * window / prev
        wait_num, wait_den = prev * remaining_us - room * window_us, prev
    return Hit(False, max(1, _ceil_div(wait_num, wait_den * 1_000_000)))


class WindowLimiter(Protocol):
    """One shared counter per key; ``hit`` spends ``cost`` if it fits, atomically."""

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Hit: ...

    async def close(self) -> None: ...


def _roll(bucket: int, prev: int, cur: int, now_bucket: int) -> tuple[int, int]:
    """The (prev, cur) counts as seen from ``now_bucket``."""
    if bucket == now_bucket:
        return prev, cur
    if bucket == now_bucket - 1:
        return cur, 0
    return 0, 0


class MemoryLimiter:
    """One process only: for a proxy without a state store, and for tests."""

    def __init__(self, clock_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self._clock = clock_us
        self._rows: dict[str, tuple[int, int, int]] = {}

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Hit:
        now = self._clock()
        window_us = window_s * 1_000_000
        bucket = now // window_us
        prev, cur = _roll(*self._rows.get(f"{window_s}|{key}", (bucket, 0, 0)), bucket)
        hit = decide(prev, cur, now - bucket * window_us, window_us, limit, cost)
        if hit.allowed:
            self._rows[f"{window_s}|{key}"] = (bucket, prev, cur + cost)
        return hit

    async def close(self) -> None:
        self._rows.clear()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, bucket INTEGER NOT NULL, prev INTEGER NOT NULL, cur INTEGER NOT NULL
) WITHOUT ROWID;
"""


class SqliteLimiter:
    """Counters in their own SQLite file, shared by the host's workers (see the module doc)."""

    def __init__(self, path: Path, clock_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self._path = Path(path)
        self._clock = clock_us
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rate-limits")
        self._conn: sqlite3.Connection | None = None
        #: the group commit (proxy.state.group_commit) spends weight from the state store's thread
        self._lock = threading.Lock()
        self._executor.submit(self._connect).result()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            # Switching to WAL and creating the schema can meet "database is locked" when several
            # workers start at once (the busy handler does not cover the journal-mode switch).
            for attempt in range(50):
                try:
                    conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False,
                                           timeout=0)
                    try:
                        conn.execute("PRAGMA busy_timeout = 5000")
                        conn.execute("PRAGMA journal_mode = WAL")
                        conn.execute("PRAGMA synchronous = OFF")
                        conn.executescript(_SCHEMA)
                    except BaseException:
                        conn.close()
                        raise
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 49:
                        raise NotReady(f"rate-limit store unreachable: sqlite {self._path}: {exc}") from exc
                    time.sleep(0.05)
                except (sqlite3.Error, OSError) as exc:
                    raise NotReady(f"rate-limit store unreachable: sqlite {self._path}: {exc}") from exc
            self._conn = conn
        return self._conn

    def hit_sync(self, key: str, limit: int, window_s: int, cost: int = 1) -> Hit:
        """``hit`` on the calling thread (the group commit's); safe beside ``hit``."""
        return self._hit(key, limit, window_s, cost)

    def _hit(self, key: str, limit: int, window_s: int, cost: int) -> Hit:
        with self._lock:
            return self._hit_locked(key, limit, window_s, cost)

    def _hit_locked(self, key: str, limit: int, window_s: int, cost: int) -> Hit:
        conn = self._connect()
        window_us = window_s * 1_000_000
        row_key = f"{window_s}|{key}"
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock()
                bucket = now // window_us
                row = conn.execute(
                    "SELECT bucket, prev, cur FROM counters WHERE key = ?", (row_key,)
                ).fetchone()
                prev, cur = _roll(int(row[0]), int(row[1]), int(row[2]), bucket) if row else (0, 0)
                hit = decide(prev, cur, now - bucket * window_us, window_us, limit, cost)
                if hit.allowed:
                    conn.execute(
                        "INSERT OR REPLACE INTO counters (key, bucket, prev, cur) VALUES (?, ?, ?, ?)",
                        (row_key, bucket, prev, cur + cost),
                    )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise NotReady(f"rate-limit store unreachable: sqlite {self._path}: {exc}") from exc
        return hit

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Hit:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._hit, key, limit, window_s, cost)

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)


class RedisLimiter:
    """Sliding window counters in Redis (or Valkey), shared by every host: one Lua script per
    hit (proxy.state.redis_scripts.WINDOW_HIT_LUA), the same one the group commit runs beside
    each claim (``spend_call``), so both spend from one counter per key."""

    def __init__(self, url: str, prefix: str = "esp:limits",
                 clock_us: Callable[[], int] | None = None) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        from proxy.state.redis_scripts import WINDOW_HIT_LUA

        self._prefix = prefix
        #: None: the Redis server's clock, one for every host (tests pass their own)
        self._clock = clock_us
        # as the state store: one immediate retry reconnects after a Redis restart, no backoff
        # (an unreachable Redis refuses within the timeout instead of holding requests)
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=False,
            retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError, RedisTimeoutError])
        self._script = self._redis.register_script(WINDOW_HIT_LUA)

    def spend_call(self, key: str, limit: int, window_s: int, cost: int = 1) -> tuple[str, list[str]]:
        """The counter's key and the script's arguments, for a script that spends beside
        other work (proxy.state.redis_scripts.CLAIM_SPEND_LUA)."""
        now = "" if self._clock is None else str(self._clock())
        return f"{self._prefix}:{window_s}|{key}", [now, str(window_s * 1_000_000), str(limit), str(cost)]

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Hit:
        from redis.exceptions import RedisError

        counter, args = self.spend_call(key, limit, window_s, cost)
        try:
            allowed, retry_after = await self._script(keys=[counter], args=args)
        except (RedisError, OSError) as exc:
            raise NotReady(f"rate-limit store unreachable: redis: {type(exc).__name__}") from None
        return ALLOWED if allowed == 1 else Hit(False, int(retry_after))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.aclose()


def open_limiter(backend: str, *, path: Path | None, url: str | None) -> WindowLimiter:
    """The limiter for the configured state backend (see the module docstring)."""
    if backend == "redis" and url:
        return RedisLimiter(url)
    if backend == "sqlite" and path is not None:
        return SqliteLimiter(path.with_name(path.name + ".limits"))
    return MemoryLimiter()
