"""Redis (or Valkey) state store: several hosts share nonces, locks, client order ids.

Why it is shaped this way:
- Every read-decide-write is one Lua script, so it is atomic across all hosts.
- Lua numbers are doubles. Nonces and window amounts never become Lua numbers: they travel
  and are compared, incremented and summed as decimal strings, so they are exact at any size
  (nanosecond nonces, 18-decimal amounts). Only timestamps in microseconds are compared as
  numbers; they are exact below 2**53 (until the year 2255).
- Expiry compares the callers' clocks (``now_us``), not Redis's, so tests can skew time; keep
  hosts NTP-synced. Redis key TTLs are only garbage collection, set a minute past expiry.
- Fail closed: any Redis error becomes NotReady; one immediate retry on a broken connection
  lets the pool reconnect after a Redis restart without a failed request.
- Durability: the nonce high-water mark survives proxy restarts. Across a Redis restart it
  survives only with persistence (``appendonly yes``, ``appendfsync always`` for certainty);
  without it nonces restart from the clock, which is safe while the clock is ahead of the lost
  mark (true unless a key allocated faster than one nonce per unit).
- Per-key locks: ``SET NX PX`` with a random token, released and extended only by a Lua
  compare-and-act, so a holder never frees someone else's lock. The lease is extended every
  third of ``lease_s`` while held; a holder killed with -9 blocks the key for at most ``lease_s``.
- One Redis (or a Sentinel-managed primary); Redis Cluster is not supported (keys carry no
  hash tags, and failover can lose acknowledged writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.errors import LockTimeout, NotReady
from proxy.state import redis_scripts as scripts
from proxy.state.base import (
    DEFAULT_LEASE_S,
    DEFAULT_RECORD_TTL_S,
    BeginResult,
    Conflict,
    IdempotencyScope,
    InFlight,
    KeyLease,
    NonceUnit,
    Owner,
    Replay,
    StoredResponse,
    wall_clock_us,
)
from proxy.state.rules import check_unit, nonce_from_clock, scale_amount, to_us, unscale_amount
from proxy.state.waiting import poll_begin

T = TypeVar("T")

_GC_MARGIN_MS = 60_000



def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _begin_result(reply: Any, token: str) -> BeginResult:
    kind = _text(reply[0])
    if kind == "owner":
        return Owner(token=token, previous_unknown=_text(reply[1]) == "1")
    if kind == "conflict":
        return Conflict()
    if kind == "inflight":
        return InFlight(int(_text(reply[1])))
    headers = json.loads(_text(reply[2]))
    return Replay(
        StoredResponse(
            status=int(_text(reply[1])),
            headers=tuple((str(k), str(v)) for k, v in headers),
            body=bytes(reply[3]),
        )
    )


@dataclass(frozen=True)
class WeightRefused:
    """CLAIM_SPEND_LUA's answer when the new owner's weight did not fit: the claim (``token``)
    was undone in the same script, nothing was spent."""

    token: str
    retry_after: int
    allowed: bool = False


class RedisStateStore:
    """StateStore on one Redis/Valkey server (see the module docstring for the design)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "esp:",
        clock: Callable[[], int] = wall_clock_us,
        socket_timeout_s: float = 2.0,
        max_connections: int = 32,
    ) -> None:
        self._prefix = prefix
        self._clock = clock
        retry = Retry(NoBackoff(), 1)
        # A blocking pool: a burst of concurrent requests queues for a connection (up to the
        # socket timeout) instead of failing with "Too many connections".
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout_s,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            decode_responses=False,
        )
        self._redis = aioredis.Redis(
            connection_pool=self._pool,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._nonce = self._redis.register_script(scripts.NONCE_LUA)
        self._begin = self._redis.register_script(scripts.BEGIN_LUA)
        self._claim_spend = self._redis.register_script(scripts.CLAIM_SPEND_LUA)
        self._complete = self._redis.register_script(scripts.COMPLETE_LUA)
        self._abandon = self._redis.register_script(scripts.ABANDON_LUA)
        self._window = self._redis.register_script(scripts.WINDOW_LUA)
        self._extend_flag = self._redis.register_script(scripts.EXTEND_FLAG_LUA)
        self._unlock = self._redis.register_script(scripts.UNLOCK_LUA)
        self._extend = self._redis.register_script(scripts.EXTEND_LUA)
        self._local_locks: dict[str, asyncio.Lock] = {}
        self._scripts_loaded = False  # the idempotency scripts, for pipeline()

    # -- plumbing ---------------------------------------------------------------------------
    async def _guard(self, op: Awaitable[T]) -> T:
        """Translate every Redis failure into NotReady: the caller refuses and sends nothing."""
        try:
            return await op
        except RedisError as exc:
            raise NotReady(f"state store unreachable: redis: {exc}") from exc
        except OSError as exc:
            raise NotReady(f"state store unreachable: redis: {exc}") from exc

    async def _eval(self, script: Any, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        return await self._guard(script(keys=list(keys), args=list(args)))

    def _now(self, now_us: int | None) -> int:
        return self._clock() if now_us is None else now_us

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    async def ping(self) -> None:
        await self._guard(self._redis.ping())

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()
            await self._pool.disconnect()

    # -- nonces -----------------------------------------------------------------------------
    async def _nonce_op(self, key_id: str, unit: NonceUnit, value: int, mode: str) -> int:
        if value < 0:
            raise ValueError("nonce values are >= 0")
        reply = await self._eval(
            self._nonce, [self._key("nonce", key_id)], [unit, str(value), mode]
        )
        if _text(reply[0]) == "unit":
            check_unit(key_id, _text(reply[1]), unit)
        return int(_text(reply[1]))

    async def next_nonce(self, key_id: str, unit: NonceUnit, *, now_us: int | None = None) -> int:
        return await self._nonce_op(key_id, unit, nonce_from_clock(self._now(now_us), unit), "next")

    def nonce_call(self, key_id: str, unit: NonceUnit, now_us: int
                   ) -> tuple[Any, list[str], list[str | bytes], Callable[[Any], int]]:
        """``next_nonce`` as (script, keys, args, parse): proxy.state.batches pipelines it with
        its claim. ``parse`` raises NonceUnitChanged as ``next_nonce`` does."""
        def parse(reply: Any) -> int:
            if _text(reply[0]) == "unit":
                check_unit(key_id, _text(reply[1]), unit)
            return int(_text(reply[1]))

        value = str(nonce_from_clock(now_us, unit))
        return self._nonce, [self._key("nonce", key_id)], [unit, value, "next"], parse

    async def raise_floor(self, key_id: str, unit: NonceUnit, floor: int) -> int:
        nonce_from_clock(0, unit)  # validates the unit
        return await self._nonce_op(key_id, unit, floor, "floor")

    async def last_nonce(self, key_id: str) -> int | None:
        raw = await self._guard(self._redis.hget(self._key("nonce", key_id), "last"))
        return None if raw is None else int(_text(raw))

    @contextlib.asynccontextmanager
    async def key_lock(
        self, key_id: str, timeout_s: float, *, lease_s: float = DEFAULT_LEASE_S
    ) -> AsyncIterator[KeyLease]:
        """SET NX PX with a token; extended every lease_s/3 while held; released only by its
        holder. Local waiters queue on an asyncio lock first, so only one task per process
        polls Redis."""
        deadline = time.monotonic() + timeout_s
        local = self._local_locks.setdefault(key_id, asyncio.Lock())
        try:
            await asyncio.wait_for(local.acquire(), timeout=max(timeout_s, 0.0))
        except TimeoutError:
            raise LockTimeout(f"key {key_id!r} stayed locked for {timeout_s}s; retry") from None
        try:
            key = self._key("lock", key_id)
            token = secrets.token_hex(16)
            lease_ms = max(1, to_us(lease_s) // 1000)
            delay = 0.001
            while not await self._guard(self._redis.set(key, token, nx=True, px=lease_ms)):
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"key {key_id!r} stayed locked for {timeout_s}s; retry")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)
            lease = KeyLease()
            keeper = asyncio.create_task(self._keep_lock(key, token, lease_ms, lease))
            try:
                yield lease
            finally:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
                # If Redis is down now, the lease simply expires after lease_s.
                with contextlib.suppress(NotReady):
                    await self._eval(self._unlock, [key], [token])
        finally:
            local.release()

    async def _keep_lock(self, key: str, token: str, lease_ms: int, lease: KeyLease) -> None:
        """Extend the lease every third of its length; mark it lost if that fails for longer
        than the lease itself."""
        held_until = time.monotonic() + lease_ms / 1000
        while True:
            await asyncio.sleep(lease_ms / 3000)
            try:
                if not await self._eval(self._extend, [key], [token, str(lease_ms)]):
                    lease.lost = True
                    return
                held_until = time.monotonic() + lease_ms / 1000
            except NotReady:
                if time.monotonic() >= held_until:
                    lease.lost = True
                    return

    # -- idempotency ------------------------------------------------------------------------
    def begin_call(
        self, scope: IdempotencyScope, content_hash: str, ttl_s: float, lease_s: float, now: int
    ) -> tuple[Any, list[str], list[str | bytes], Callable[[Any], BeginResult]]:
        """``begin`` as (script, keys, args, parse): proxy.state.group_commit pipelines many."""
        keys, args, token = self._begin_args(scope, content_hash, ttl_s, lease_s, now)
        return self._begin, keys, args, lambda reply: _begin_result(reply, token)

    def claim_spend_call(
        self, scope: IdempotencyScope, content_hash: str, ttl_s: float, lease_s: float, now: int,
        counter: tuple[str, list[str]],
    ) -> tuple[Any, list[str], list[str | bytes], Callable[[Any], BeginResult | WeightRefused]]:
        """``begin_call`` that also spends the weight of a new owner (``counter``: the key and
        arguments from proxy.guards.rate_limits.RedisLimiter.spend_call), in the same script."""
        keys, args, token = self._begin_args(scope, content_hash, ttl_s, lease_s, now)

        def parse(reply: Any) -> BeginResult | WeightRefused:
            if _text(reply[0]) == "refused":
                return WeightRefused(token, int(reply[1]))
            return _begin_result(reply, token)

        return self._claim_spend, [*keys, counter[0]], [*args, *counter[1]], parse

    def _begin_args(
        self, scope: IdempotencyScope, content_hash: str, ttl_s: float, lease_s: float, now: int
    ) -> tuple[list[str], list[str | bytes], str]:
        lease_until = now + to_us(lease_s)
        expires = lease_until + to_us(ttl_s)
        gc_ms = (expires - now) // 1000 + _GC_MARGIN_MS
        token = secrets.token_hex(16)
        keys = [self._key("idem", scope.storage_key())]
        return keys, [content_hash, str(now), str(lease_until), str(expires), token, str(gc_ms)], token

    def complete_call(
        self, scope: IdempotencyScope, response: StoredResponse, token: str | None, ttl_s: float, now: int
    ) -> tuple[Any, list[str], list[str | bytes]]:
        """``complete`` as (script, keys, args)."""
        ttl_us = to_us(ttl_s)
        headers = json.dumps([list(h) for h in response.headers])
        return self._complete, [self._key("idem", scope.storage_key())], [
            token or "", str(response.status), headers, response.body, str(now + ttl_us),
            str(ttl_us // 1000 + _GC_MARGIN_MS),
        ]

    def abandon_call(
        self, scope: IdempotencyScope, token: str | None
    ) -> tuple[Any, list[str], list[str | bytes]]:
        """``abandon`` as (script, keys, args)."""
        return self._abandon, [self._key("idem", scope.storage_key())], [token or ""]

    async def pipeline(self, calls: Sequence[tuple[Any, list[str], list[str | bytes]]]) -> list[Any]:
        """Run script calls in one round trip (not a transaction: each script is atomic on its
        own). A failed call's slot holds its exception; a failed round trip raises NotReady.
        By hash only, not a SCRIPT EXISTS round trip per batch: the scripts are loaded once, and
        again when Redis lost them (a restart), when none of them ran; the calls that failed
        then run again, in order."""
        if not self._scripts_loaded:
            await self._load_scripts()
        replies = await self._pipelined(calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self._load_scripts()
            for i, reply in zip(missing, await self._pipelined([calls[i] for i in missing]), strict=True):
                replies[i] = reply
        return replies

    async def _pipelined(self, calls: Sequence[tuple[Any, list[str], list[str | bytes]]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.pipeline_execute_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        return list(await self._guard(pipe.execute(raise_on_error=False)))

    async def _load_scripts(self) -> None:
        for script in (self._begin, self._claim_spend, self._complete, self._abandon, self._nonce,
                       self._window):
            await self._guard(self._redis.script_load(script.script))
        self._scripts_loaded = True

    def now_us(self) -> int:
        return self._clock()

    async def begin(
        self,
        scope: IdempotencyScope,
        content_hash: str,
        ttl_s: float = DEFAULT_RECORD_TTL_S,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        now_us: int | None = None,
    ) -> BeginResult:
        script, keys, args, parse = self.begin_call(scope, content_hash, ttl_s, lease_s, self._now(now_us))
        return parse(await self._eval(script, keys, args))

    async def wait(
        self,
        scope: IdempotencyScope,
        timeout_s: float,
        *,
        content_hash: str,
        ttl_s: float = DEFAULT_RECORD_TTL_S,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> BeginResult:
        return await poll_begin(
            self, scope, timeout_s, content_hash=content_hash, ttl_s=ttl_s, lease_s=lease_s
        )

    async def complete(
        self,
        scope: IdempotencyScope,
        response: StoredResponse,
        *,
        token: str | None = None,
        ttl_s: float = DEFAULT_RECORD_TTL_S,
        now_us: int | None = None,
    ) -> bool:
        script, keys, args = self.complete_call(scope, response, token, ttl_s, self._now(now_us))
        return bool(await self._eval(script, keys, args))

    async def abandon(self, scope: IdempotencyScope, *, token: str | None = None) -> bool:
        script, keys, args = self.abandon_call(scope, token)
        return bool(await self._eval(script, keys, args))

    # -- windows and flags ------------------------------------------------------------------
    async def add_to_window(
        self,
        key: str,
        amount: Decimal | int,
        window_s: float,
        *,
        limit: Decimal | int | None = None,
        now_us: int | None = None,
    ) -> Decimal:
        script, keys, args, parse = self.window_call(key, amount, window_s, limit, self._now(now_us))
        return parse(await self._eval(script, keys, args))

    def window_call(self, key: str, amount: Decimal | int, window_s: float, limit: Decimal | int | None,
                    now: int) -> tuple[Any, list[str], list[str | bytes], Callable[[Any], Decimal]]:
        """``add_to_window`` as (script, keys, args, parse): proxy.state.batches pipelines many."""
        window_us = to_us(window_s)
        args: list[str | bytes] = [
            str(now - window_us), str(now), secrets.token_hex(8), str(scale_amount(amount)),
            "" if limit is None else str(scale_amount(limit)), str(window_us // 1000 + _GC_MARGIN_MS),
        ]
        return self._window, [self._key("win", key)], args, lambda reply: unscale_amount(int(_text(reply)))

    async def set_flag(
        self, name: str, value: str, ttl_s: float | None = None, *, now_us: int | None = None
    ) -> None:
        key = self._key("flag", name)
        if ttl_s is None:
            await self._guard(self._redis.set(key, f":{value}"))
            return
        ttl_us = to_us(ttl_s)
        expires = self._now(now_us) + ttl_us
        gc_ms = ttl_us // 1000 + _GC_MARGIN_MS
        await self._guard(self._redis.set(key, f"{expires}:{value}", px=gc_ms))

    async def extend_flag(
        self, name: str, value: str, ttl_s: float, *, now_us: int | None = None
    ) -> str:
        ttl_us = to_us(ttl_s)
        expires = self._now(now_us) + ttl_us
        gc_ms = ttl_us // 1000 + _GC_MARGIN_MS
        raw = await self._eval(self._extend_flag, [self._key("flag", name)],
                               [str(expires), value, str(gc_ms)])
        return _text(raw).partition(":")[2]

    async def get_flag(self, name: str, *, now_us: int | None = None) -> str | None:
        raw = await self._guard(self._redis.get(self._key("flag", name)))
        if raw is None:
            return None
        expires, _, value = _text(raw).partition(":")
        if expires and int(expires) <= self._now(now_us):
            return None
        return value

    async def clear_flag(self, name: str) -> None:
        await self._guard(self._redis.delete(self._key("flag", name)))
