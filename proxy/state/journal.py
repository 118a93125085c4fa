"""The audit trail as the sqlite store's journal: one fsync per group-commit batch.

A batch of the sqlite group commit (proxy.state.batches) commits its claims, completions and
abandons with ``synchronous=NORMAL`` (written to the WAL, in the OS page cache, not fsynced),
then appends the batch's decision records to the audit trail with its one fdatasync. A
``kill -9`` loses nothing (the page cache outlives the process). A power cut or an OS crash may
lose the last un-fsynced commits (the WAL keeps a prefix of them); the records of those
batches are durable in the trail, and :func:`replay` restores their claims at start-up, before
any worker serves. What else such a batch holds is safe to lose: a completion or an abandon
lost leaves the claim in flight, so a retry after its lease asks the exchange by client order
id (proxy.pipeline.lookup), as after any crash between sending and completing; a takeover
claim lost leaves the earlier, expired one, with the same effect. An owner's nonce is restored
too: its record names the nonce and its key's fingerprint (``nonce_key``), and the fingerprint's
row in ``nonce_keys`` (key id and unit) is written by the key's first batch in each worker,
which commits with fsync. Everything else (policy budgets, flags, claims without a decision
record in the batch) stays ``synchronous=FULL``.

Where replay starts: every batch writes, in its own transaction, its audit writer's position
(segment, byte offset) just before its records (the ``journal`` table, one row per writer). The WAL
keeps commits in order, so after a power cut the row names the last durable batch of that
writer and every lost batch's records come after it. A writer's first batch is FULL, so a
writer that appended any journaled record has a durable row. Replay reads only dead writers'
chains (a live one's lock is held), restores, and drops their rows in one FULL transaction;
it is idempotent, so reading more than the lost tail is harmless.

What is restored: each allow decision record carrying ``content_digest`` (only the sqlite
group commit adds it, to the records of single placements) whose scope has no live row gets
an in-flight claim whose lease is already over. The retry with the same client order id and
content is then ``Owner(previous_unknown=True)`` and looks the order up before placing it; a
retry with other content is a conflict, as before the power cut. And each key named by a
record's ``nonce_key`` gets its nonce floor raised to the highest ``nonce`` the tail's records
name for it (never lowered; the unit is the one its ``nonce_keys`` row was written with, and a
key that signed in another unit is refused, as in proxy.state.rules): the next nonce is above
every nonce that may have been signed. Both in the same transaction.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from proxy.errors import NotReady
from proxy.state.base import IdempotencyScope, wall_clock_us
from proxy.state.group_commit import NONCE_KEY
from proxy.state.rules import check_unit, to_us
from proxy.state.sqlite_schema import SCHEMA

DIGEST = "content_digest"
"""The decision record's field that names the order's content (proxy.pipeline.lookup)."""

log = logging.getLogger("proxy.state.journal")

Tail = Callable[[str, int, int], Iterable[Mapping[str, Any]] | None]
"""(writer, segment, offset) -> that writer's records from there on; None while it is alive."""


@runtime_checkable
class JournalLog(Protocol):
    """An audit trail that can serve as the journal (proxy.audit.writer.AuditWriter)."""

    @property
    def writer_id(self) -> str: ...

    def position(self) -> tuple[int, int]: ...


def mark_fn(writer: str, seg: int, offset: int) -> Callable[[sqlite3.Connection], None]:
    """A batch's transaction step: where its writer's next records begin."""

    def fn(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO journal (writer, seg, pos) VALUES (?, ?, ?) ON CONFLICT (writer)"
                  " DO UPDATE SET seg = excluded.seg, pos = excluded.pos", (writer, seg, offset))

    return fn


def journal_scope(record: Mapping[str, Any]) -> IdempotencyScope | None:
    """The scope a record's claim lives in, if the record can restore it."""
    if record.get("phase") != "decision" or record.get("decision") != "allow":
        return None
    parts = record.get("client"), record.get("account"), record.get("client_order_id")
    if not all(isinstance(p, str) and p for p in parts) or not isinstance(record.get(DIGEST), str):
        return None
    client, account, coid = parts
    assert isinstance(client, str) and isinstance(account, str) and isinstance(coid, str)
    return IdempotencyScope(client, account, coid)


@dataclass(frozen=True)
class Replayed:
    writers: int
    restored: int
    nonces: int = 0  # keys whose nonce floor was raised


def replay(path: Path, tail: Tail, ttl_s: float, *, now_us: int | None = None,
           busy_timeout_s: float = 5.0) -> Replayed:
    """Restore the claims a power cut took from the store at ``path`` (see the module
    docstring). A missing store file has nothing to restore. Raises NotReady on sqlite errors."""
    if not Path(path).exists():
        return Replayed(0, 0)
    now = wall_clock_us() if now_us is None else now_us
    expires = now + to_us(ttl_s)
    writers = restored = raised = 0
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(SCHEMA)
            for writer, seg, offset in conn.execute("SELECT writer, seg, pos FROM journal").fetchall():
                records = tail(writer, seg, offset)
                if records is None:
                    continue  # alive: its commits are not lost
                scopes, floors = _read(records)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for key, digest in scopes.items():
                        row = conn.execute("SELECT expires_us FROM idempotency WHERE scope = ?",
                                           (key,)).fetchone()
                        if row is not None and int(row[0]) > now:
                            continue  # the claim (or its answer) survived
                        conn.execute(
                            "INSERT OR REPLACE INTO idempotency (scope, content_hash, state, token,"
                            " lease_until_us, expires_us) VALUES (?, ?, 'inflight', ?, ?, ?)",
                            (key, digest, secrets.token_hex(16), now, expires))
                        restored += 1
                    raised += sum(_raise_floor(conn, fp, floor) for fp, floor in floors.items())
                    conn.execute("DELETE FROM journal WHERE writer = ? AND seg = ? AND pos = ?",
                                 (writer, seg, offset))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                writers += 1
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise NotReady(f"state store unreachable: sqlite {path}: {exc}") from exc
    return Replayed(writers, restored, raised)


def _read(records: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str], dict[str, int]]:
    """One pass over the tail: the claims to restore (storage key -> content digest), and the
    highest nonce the decision records name for each key fingerprint."""
    scopes: dict[str, str] = {}
    floors: dict[str, int] = {}
    for rec in records:
        scope = journal_scope(rec)
        if scope is not None:
            scopes[scope.storage_key()] = str(rec[DIGEST])
        fp, nonce = rec.get(NONCE_KEY), rec.get("nonce")
        if (rec.get("phase") == "decision" and isinstance(fp, str) and isinstance(nonce, int)
                and not isinstance(nonce, bool)):
            floors[fp] = max(nonce, floors.get(fp, nonce))
    return scopes, floors


def _raise_floor(conn: sqlite3.Connection, fingerprint: str, floor: int) -> bool:
    """The key's last nonce is at least ``floor`` (in the unit its fingerprint's row names);
    whether it was raised."""
    key = conn.execute("SELECT key_id, unit FROM nonce_keys WHERE fingerprint = ?",
                       (fingerprint,)).fetchone()
    if key is None:  # only a batch that wrote this row durably names the fingerprint
        log.error("the audit trail names nonce key %s, which the state store does not know: "
                  "its nonce floor cannot be raised", fingerprint)
        return False
    key_id, unit = key
    row = conn.execute("SELECT unit, last FROM nonces WHERE key_id = ?", (key_id,)).fetchone()
    if row is not None:
        check_unit(key_id, row[0], unit)
        if int(row[1]) >= floor:
            return False
    conn.execute("INSERT INTO nonces (key_id, unit, last) VALUES (?, ?, ?) "
                 "ON CONFLICT (key_id) DO UPDATE SET last = excluded.last", (key_id, unit, floor))
    return True
