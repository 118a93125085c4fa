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
from decimal import Decimal
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.errors import NotReady
from proxy.state.base import (
    DEFAULT_LEASE_S,
    DEFAULT_RECORD_TTL_S,
    BeginResult,
    Conflict,
    IdempotencyScope,
    InFlight,
    KeyLease,
    LockTimeout,
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

_DECIMAL_LUA = """
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local function add(a, b)
  local out, carry = {}, 0
  local i, j = #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local s = carry
    if i > 0 then s = s + string.byte(a, i) - 48 end
    if j > 0 then s = s + string.byte(b, j) - 48 end
    out[#out + 1] = string.char(48 + s % 10)
    if s >= 10 then carry = 1 else carry = 0 end
    i = i - 1
    j = j - 1
  end
  return string.reverse(table.concat(out))
end
"""

# KEYS[1] nonce hash; ARGV: unit, value (canonical decimal), mode ("next" | "floor")
_NONCE_LUA = (
    _DECIMAL_LUA
    + """
local rec = redis.call('HMGET', KEYS[1], 'unit', 'last')
if rec[1] and rec[1] ~= ARGV[1] then return {'unit', rec[1]} end
local last = rec[2]
local value
if ARGV[3] == 'next' then
  if (not last) or gt(ARGV[2], last) then value = ARGV[2] else value = add(last, '1') end
else
  if last and not gt(ARGV[2], last) then return {'ok', last} end
  value = ARGV[2]
end
redis.call('HSET', KEYS[1], 'unit', ARGV[1], 'last', value)
return {'ok', value}
"""
)

# KEYS[1] record; ARGV: content hash, now, lease_until, expires, token, gc_ms
_BEGIN_LUA = """
local now = tonumber(ARGV[2])
local r = redis.call('HMGET', KEYS[1], 'hash', 'state', 'lease_until', 'expires')
if r[1] and tonumber(r[4]) > now then
  if r[1] ~= ARGV[1] then return {'conflict'} end
  if r[2] == 'done' then
    local d = redis.call('HMGET', KEYS[1], 'status', 'headers', 'body')
    return {'replay', d[1], d[2], d[3]}
  end
  if tonumber(r[3]) > now then return {'inflight', r[3]} end
  redis.call('HSET', KEYS[1], 'token', ARGV[5], 'lease_until', ARGV[3], 'expires', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  return {'owner', '1', ARGV[5]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'state', 'inflight', 'token', ARGV[5],
           'lease_until', ARGV[3], 'expires', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {'owner', '0', ARGV[5]}
"""

# KEYS[1] record; ARGV: token ('' = any), status, headers, body, expires, gc_ms
_COMPLETE_LUA = """
local r = redis.call('HMGET', KEYS[1], 'state', 'token')
if r[1] ~= 'inflight' then return 0 end
if ARGV[1] ~= '' and r[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'headers', ARGV[3],
           'body', ARGV[4], 'expires', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""

# KEYS[1] record; ARGV: token ('' = any)
_ABANDON_LUA = """
local r = redis.call('HMGET', KEYS[1], 'state', 'token')
if r[1] ~= 'inflight' then return 0 end
if ARGV[1] ~= '' and r[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS[1] zset of "<id>:<scaled amount>" scored by time; ARGV: since, now, id, scaled,
# cap ('' = none), gc_ms
_WINDOW_LUA = (
    _DECIMAL_LUA
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local total = ARGV[4]
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = add(total, string.match(m, ':(%d+)$'))
end
if ARGV[5] ~= '' and gt(total, ARGV[5]) then return total end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3] .. ':' .. ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return total
"""
)

_EXTEND_FLAG_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ends = string.match(cur, '^(%d*):')
  -- microsecond ends compared as decimal strings (no leading zeros), never as Lua numbers
  if ends == '' or (ends and (#ends > #ARGV[1] or (#ends == #ARGV[1] and ends >= ARGV[1]))) then
    return cur
  end
end
local new = ARGV[1] .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], new, 'PX', ARGV[3])
return new
"""

_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_EXTEND_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
        self._nonce = self._redis.register_script(_NONCE_LUA)
        self._begin = self._redis.register_script(_BEGIN_LUA)
        self._complete = self._redis.register_script(_COMPLETE_LUA)
        self._abandon = self._redis.register_script(_ABANDON_LUA)
        self._window = self._redis.register_script(_WINDOW_LUA)
        self._extend_flag = self._redis.register_script(_EXTEND_FLAG_LUA)
        self._unlock = self._redis.register_script(_UNLOCK_LUA)
        self._extend = self._redis.register_script(_EXTEND_LUA)
        self._local_locks: dict[str, asyncio.Lock] = {}

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
    async def begin(
        self,
        scope: IdempotencyScope,
        content_hash: str,
        ttl_s: float = DEFAULT_RECORD_TTL_S,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        now_us: int | None = None,
    ) -> BeginResult:
        now = self._now(now_us)
        lease_until = now + to_us(lease_s)
        expires = lease_until + to_us(ttl_s)
        gc_ms = (expires - now) // 1000 + _GC_MARGIN_MS
        token = secrets.token_hex(16)
        reply = await self._eval(
            self._begin,
            [self._key("idem", scope.storage_key())],
            [content_hash, str(now), str(lease_until), str(expires), token, str(gc_ms)],
        )
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
        ttl_us = to_us(ttl_s)
        expires = self._now(now_us) + ttl_us
        headers = json.dumps([list(h) for h in response.headers])
        done = await self._eval(
            self._complete,
            [self._key("idem", scope.storage_key())],
            [
                token or "",
                str(response.status),
                headers,
                response.body,
                str(expires),
                str(ttl_us // 1000 + _GC_MARGIN_MS),
            ],
        )
        return bool(done)

    async def abandon(self, scope: IdempotencyScope, *, token: str | None = None) -> bool:
        done = await self._eval(
            self._abandon, [self._key("idem", scope.storage_key())], [token or ""]
        )
        return bool(done)

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
        now = self._now(now_us)
        window_us = to_us(window_s)
        total = await self._eval(
            self._window,
            [self._key("win", key)],
            [
                str(now - window_us),
                str(now),
                secrets.token_hex(8),
                str(scale_amount(amount)),
                "" if limit is None else str(scale_amount(limit)),
                str(window_us // 1000 + _GC_MARGIN_MS),
            ],
        )
        return unscale_amount(int(_text(total)))

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
