"""SQLite state store: several processes on one host, survives restarts.

Why it is shaped this way:
- WAL, ``BEGIN IMMEDIATE`` and a busy timeout let every worker process write the same file;
  each operation is one tiny transaction, so the write lock is held for microseconds.
- All SQL runs on one private thread per store, so the event loop never waits on the disk or on
  another process's write lock.
- ``synchronous=FULL`` by default: a committed nonce or idempotency record survives a power
  cut, not only a process crash (NORMAL is faster and still safe against kill -9). The group
  commit's batches are the exception: they commit with NORMAL, the audit trail's fdatasync
  being their one durability point (proxy.state.journal restores what a power cut takes).
- Per-key locks are ``flock`` on one file per key next to the database: the kernel drops them
  when the holder dies, so kill -9 never leaves a key blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Literal, TypeVar

from proxy.errors import NotReady
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
from proxy.state.file_locks import key_file_lock
from proxy.state.rules import (
    IdemRecord,
    check_unit,
    decide_begin,
    next_nonce_value,
    nonce_from_clock,
    scale_amount,
    to_us,
    unscale_amount,
)
from proxy.state.sqlite_schema import SCHEMA as _SCHEMA
from proxy.state.waiting import poll_begin

log = logging.getLogger("proxy.state")

T = TypeVar("T")

_PURGE_EVERY = 1000
"""Delete expired idempotency records once per this many ``begin`` calls."""


class SqliteStateStore:
    """StateStore on one SQLite file (see the module docstring for the design)."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], int] = wall_clock_us,
        busy_timeout_s: float = 5.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._busy_ms = int(busy_timeout_s * 1000)
        self._sync = synchronous
        self._sync_now = synchronous  # the connection's current setting (see transaction)
        self._lock_dir = self._path.with_name(self._path.name + ".locks")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._local_locks: dict[str, asyncio.Lock] = {}
        self._begins = 0
        # Fail at start-up, not on the first order, if the file cannot be opened.
        self._executor.submit(self._connect).result()

    # -- plumbing ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            new = not self._path.exists()
            try:
                # never parents=True: a mistyped path must fail, not start an empty store
                self._lock_dir.mkdir(exist_ok=True)
                conn = sqlite3.connect(
                    self._path, isolation_level=None, check_same_thread=False, timeout=0
                )
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self._sync}")
                conn.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise NotReady(f"state store unreachable: sqlite {self._path}: {exc}") from exc
            self._conn, self._sync_now = conn, self._sync
            if new:
                log.warning("state store %s is new: no idempotency or nonce history yet; if this "
                            "is not the first start, check [state] path", self._path)
        return self._conn

    def _tx(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` in one BEGIN IMMEDIATE transaction (on the store's thread); ``durable``
        False commits without fsync (``synchronous`` is per connection, set between
        transactions)."""
        conn = self._connect()
        sync = self._sync if durable else "NORMAL"
        try:
            if sync != self._sync_now:
                conn.execute(f"PRAGMA synchronous = {sync}")
                self._sync_now = sync
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise NotReady(f"state store unreachable: sqlite {self._path}: {exc}") from exc
        return result

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The store's one thread: proxy.state.group_commit runs its batches there."""
        return self._executor

    def transaction(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` in one transaction, on the calling thread (which must be ``executor``'s).
        ``durable`` False: the COMMIT is not fsynced (a group-commit batch that the audit trail
        journals, proxy.state.journal)."""
        return self._tx(fn, durable=durable)

    def now_us(self) -> int:
        return self._clock()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._tx, fn)

    def _now(self, now_us: int | None) -> int:
        return self._clock() if now_us is None else now_us

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=True)

    # -- nonces -----------------------------------------------------------------------------
    async def next_nonce(self, key_id: str, unit: NonceUnit, *, now_us: int | None = None) -> int:
        return await self._run(self.nonce_fn(key_id, unit, self._now(now_us)))

    def nonce_fn(self, key_id: str, unit: NonceUnit, now_us: int) -> Callable[[sqlite3.Connection], int]:
        """``next_nonce`` as a step of a transaction (proxy.state.batches: with its claim)."""
        candidate = nonce_from_clock(now_us, unit)

        def fn(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT unit, last FROM nonces WHERE key_id = ?", (key_id,)).fetchone()
            if row is not None:
                check_unit(key_id, row[0], unit)
            value = next_nonce_value(None if row is None else int(row[1]), candidate)
            c.execute(
                "INSERT INTO nonces (key_id, unit, last) VALUES (?, ?, ?) "
                "ON CONFLICT (key_id) DO UPDATE SET last = excluded.last",
                (key_id, unit, value),
            )
            return value

        return fn

    async def raise_floor(self, key_id: str, unit: NonceUnit, floor: int) -> int:
        nonce_from_clock(0, unit)  # validates the unit

        def fn(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT unit, last FROM nonces WHERE key_id = ?", (key_id,)).fetchone()
            if row is not None:
                check_unit(key_id, row[0], unit)
                if int(row[1]) >= floor:
                    return int(row[1])
            c.execute(
                "INSERT INTO nonces (key_id, unit, last) VALUES (?, ?, ?) "
                "ON CONFLICT (key_id) DO UPDATE SET last = excluded.last",
                (key_id, unit, floor),
            )
            return floor

        return await self._run(fn)

    async def last_nonce(self, key_id: str) -> int | None:
        def fn(c: sqlite3.Connection) -> int | None:
            row = c.execute("SELECT last FROM nonces WHERE key_id = ?", (key_id,)).fetchone()
            return None if row is None else int(row[0])

        return await self._run(fn)

    @contextlib.asynccontextmanager
    async def key_lock(
        self, key_id: str, timeout_s: float, *, lease_s: float = DEFAULT_LEASE_S
    ) -> AsyncIterator[KeyLease]:
        """flock on a per-key file; ``lease_s`` is unused: the kernel frees a dead holder's
        lock at once. One host only (flock does not work across NFS hosts)."""
        del lease_s
        async with key_file_lock(self._lock_dir, self._local_locks, key_id, timeout_s) as lease:
            yield lease

    # -- idempotency ------------------------------------------------------------------------
    def begin_fn(
        self, scope: IdempotencyScope, content_hash: str, ttl_s: float, lease_s: float, now: int
    ) -> Callable[[sqlite3.Connection], BeginResult]:
        """``begin`` as a step of a transaction (proxy.state.group_commit runs many in one)."""
        key = scope.storage_key()
        lease_until = now + to_us(lease_s)
        expires = lease_until + to_us(ttl_s)
        token = secrets.token_hex(16)
        self._begins += 1
        purge = self._begins % _PURGE_EVERY == 0

        def fn(c: sqlite3.Connection) -> BeginResult:
            if purge:
                c.execute("DELETE FROM idempotency WHERE expires_us <= ?", (now,))
            row = c.execute(
                "SELECT content_hash, state, token, lease_until_us, expires_us, status, headers,"
                " body FROM idempotency WHERE scope = ?",
                (key,),
            ).fetchone()
            record = None if row is None else IdemRecord(row[0], row[1], row[2], row[3], row[4])
            decision = decide_begin(record, content_hash, now)
            if decision == "conflict":
                return Conflict()
            if decision == "replay":
                return Replay(_response_from_row(row[5], row[6], row[7]))
            if decision == "inflight":
                assert record is not None
                return InFlight(record.lease_until_us)
            c.execute(
                "INSERT OR REPLACE INTO idempotency (scope, content_hash, state, token,"
                " lease_until_us, expires_us) VALUES (?, ?, 'inflight', ?, ?, ?)",
                (key, content_hash, token, lease_until, expires),
            )
            return Owner(token=token, previous_unknown=decision == "takeover")

        return fn

    async def begin(
        self,
        scope: IdempotencyScope,
        content_hash: str,
        ttl_s: float = DEFAULT_RECORD_TTL_S,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        now_us: int | None = None,
    ) -> BeginResult:
        return await self._run(self.begin_fn(scope, content_hash, ttl_s, lease_s, self._now(now_us)))

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

    def complete_fn(
        self, scope: IdempotencyScope, response: StoredResponse, token: str | None, expires: int
    ) -> Callable[[sqlite3.Connection], bool]:
        """``complete`` as a step of a transaction."""
        key = scope.storage_key()
        headers = json.dumps([list(h) for h in response.headers])

        def fn(c: sqlite3.Connection) -> bool:
            row = c.execute(
                "SELECT state, token FROM idempotency WHERE scope = ?", (key,)
            ).fetchone()
            if row is None or row[0] != "inflight" or (token is not None and row[1] != token):
                return False
            c.execute(
                "UPDATE idempotency SET state = 'done', expires_us = ?, status = ?, headers = ?,"
                " body = ? WHERE scope = ?",
                (expires, response.status, headers, response.body, key),
            )
            return True

        return fn

    async def complete(
        self,
        scope: IdempotencyScope,
        response: StoredResponse,
        *,
        token: str | None = None,
        ttl_s: float = DEFAULT_RECORD_TTL_S,
        now_us: int | None = None,
    ) -> bool:
        expires = self._now(now_us) + to_us(ttl_s)
        return await self._run(self.complete_fn(scope, response, token, expires))

    def abandon_fn(self, scope: IdempotencyScope, token: str | None) -> Callable[[sqlite3.Connection], bool]:
        """``abandon`` as a step of a transaction."""
        key = scope.storage_key()

        def fn(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "DELETE FROM idempotency WHERE scope = ? AND state = 'inflight'"
                " AND (? IS NULL OR token = ?)",
                (key, token, token),
            )
            return cur.rowcount > 0

        return fn

    async def abandon(self, scope: IdempotencyScope, *, token: str | None = None) -> bool:
        return await self._run(self.abandon_fn(scope, token))

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
        return await self._run(self.window_fn(key, amount, window_s, limit, self._now(now_us)))

    def window_fn(self, key: str, amount: Decimal | int, window_s: float, limit: Decimal | int | None,
                  now: int) -> Callable[[sqlite3.Connection], Decimal]:
        """``add_to_window`` as a step of a transaction (proxy.state.batches: with its claim)."""
        scaled = scale_amount(amount)
        cap = None if limit is None else scale_amount(limit)
        since = now - to_us(window_s)

        def fn(c: sqlite3.Connection) -> Decimal:
            c.execute("DELETE FROM windows WHERE key = ? AND ts_us <= ?", (key, since))
            rows = c.execute("SELECT amount FROM windows WHERE key = ?", (key,)).fetchall()
            total = sum(int(r[0]) for r in rows) + scaled
            if cap is None or total <= cap:
                c.execute("INSERT INTO windows (key, ts_us, amount) VALUES (?, ?, ?)",
                          (key, now, str(scaled)))
            return unscale_amount(total)

        return fn

    async def set_flag(
        self, name: str, value: str, ttl_s: float | None = None, *, now_us: int | None = None
    ) -> None:
        expires = None if ttl_s is None else self._now(now_us) + to_us(ttl_s)
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO flags (name, value, expires_us) VALUES (?, ?, ?)",
                (name, value, expires),
            )
        )

    async def extend_flag(
        self, name: str, value: str, ttl_s: float, *, now_us: int | None = None
    ) -> str:
        now = self._now(now_us)
        expires = now + to_us(ttl_s)

        def fn(c: sqlite3.Connection) -> str:  # one BEGIN IMMEDIATE transaction: atomic
            row = c.execute("SELECT value, expires_us FROM flags WHERE name = ?", (name,)).fetchone()
            if row is not None and (row[1] is None or int(row[1]) >= expires):
                return str(row[0])  # already ends later (or never): keep it
            c.execute("INSERT OR REPLACE INTO flags (name, value, expires_us) VALUES (?, ?, ?)",
                      (name, value, expires))
            return value

        return await self._run(fn)

    async def get_flag(self, name: str, *, now_us: int | None = None) -> str | None:
        now = self._now(now_us)

        def fn(c: sqlite3.Connection) -> str | None:
            row = c.execute(
                "SELECT value, expires_us FROM flags WHERE name = ?", (name,)
            ).fetchone()
            if row is None or (row[1] is not None and row[1] <= now):
                return None
            return str(row[0])

        return await self._run(fn)

    async def clear_flag(self, name: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM flags WHERE name = ?", (name,)))


def _response_from_row(status: int, headers: str, body: bytes) -> StoredResponse:
    return StoredResponse(
        status=int(status),
        headers=tuple((str(k), str(v)) for k, v in json.loads(headers)),
        body=bytes(body),
    )
