"""The audit trail as the sqlite store's journal (proxy.state.journal): one disk sync per batch,
and the start-up replay that restores the claims a power cut takes from the store.

Real sqlite files and a real audit trail. The sync count is read from the kernel's side
(strace on a child process), not from the code's idea of what it does. The power cut is the
state files put back as they were before the batch: exactly what a lost page cache leaves of a
commit that was never fsynced (the WAL keeps a prefix of its commits).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args

import pytest

from proxy.audit.review import iter_records
from proxy.audit.since import records_since, writer_is_dead
from proxy.audit.writer import AuditWriter
from proxy.errors import NonceUnitChanged
from proxy.model.sensitive import Secret
from proxy.state import Conflict, IdempotencyScope, InFlight, Owner, open_store
from proxy.state.batches import group_commit
from proxy.state.group_commit import Abandon, Budget, Claim, Complete, NonceRequest, Op, Outcome
from proxy.state.journal import replay
from tests.state.conftest import REPO_ROOT
from tests.state.journal_child import MARKS

KEY = Secret(secrets.token_hex(32))


def _record(coid: str) -> dict[str, Any]:
    return {"request_id": coid, "phase": "decision", "decision": "allow", "client": "bot",
            "account": "main", "client_order_id": coid}


def _scope(coid: str) -> IdempotencyScope:
    return IdempotencyScope("bot", "main", coid)


def _syncs_between_marks(trace: str) -> list[int]:
    """fsync/fdatasync calls of every thread between consecutive markers."""
    counts: list[int] = []
    for line in trace.splitlines():
        mark = re.search(r"getpgid\((\d+)\)", line)
        if mark and int(mark[1]) in MARKS:
            counts.append(0)
        elif counts and re.search(r"\b(fsync|fdatasync)\(", line):
            counts[-1] += 1
    return counts[:-1]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to count syncs")
def test_a_batch_waits_for_exactly_one_disk_sync(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    trace = tmp_path / "trace"
    env = {**os.environ, "AUDIT_TEST_KEY": KEY.reveal(), "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,getpgid", "-o", str(trace),
         sys.executable, "-m", "tests.state.journal_child", str(tmp_path / "state.db"),
         str(tmp_path / "audit")], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        check=False)
    if run.returncode != 0 and "ptrace" in run.stderr:
        pytest.skip(f"strace cannot trace here: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, run.stderr[-2000:]
    first, claim, completion, key_first, nonce = _syncs_between_marks(trace.read_text())
    # the worker's first batch makes its journal row durable: the WAL's sync and the trail's
    assert first == 2
    # then one sync per batch: the audit append's (the store's COMMIT is not fsynced)
    assert (claim, completion) == (1, 1)
    # a nonce key's first batch makes its fingerprint's row durable; its next orders take one
    assert (key_first, nonce) == (2, 1)
    records = list(iter_records(tmp_path / "audit", KEY))
    digests = {r["request_id"]: r.get("content_digest") for r in records if r.get("phase") == "decision"}
    assert digests == {"c0": "h0", "c1": "h1", "n0": "h-n0", "n1": "h-n1"}
    fingerprint = hashlib.sha256(b"kraken:k").hexdigest()[:32]
    assert {r["request_id"]: r.get("nonce_key") for r in records if r.get("phase") == "decision"} == {
        "c0": None, "c1": None, "n0": fingerprint, "n1": fingerprint}


def _files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal")]


@pytest.mark.parametrize("segment_bytes", [64 * 1024 * 1024, 1], ids=["one segment", "rotating"])
def test_replay_restores_the_claims_a_power_cut_took(tmp_path: Path, segment_bytes: int) -> None:
    db, audit_dir, saved = tmp_path / "state.db", tmp_path / "audit", tmp_path / "saved"
    audit_dir.mkdir()
    saved.mkdir()

    async def run() -> None:
        store = open_store("sqlite", path=db, url=None)
        # rotating: every batch's records land in a new segment (a mark names the one before)
        audit = AuditWriter(audit_dir, KEY, "w1", max_segment_bytes=segment_bytes)
        await audit.start()
        commit = group_commit(store, None, audit)
        assert commit is not None
        try:
            await commit.claim(_scope("c0"), "h0", 3600, lease_s=30, record=_record("c0"))
            for f in _files(db):  # the store as the disk holds it: nothing after this is fsynced
                shutil.copy(f, saved / f.name)
            for coid in ("c1", "c2"):
                claimed = await commit.claim(_scope(coid), f"h-{coid}", 3600, lease_s=30,
                                             record=_record(coid))
                assert claimed.recorded  # the moment the proxy would send the order
        finally:
            await audit.close()
            await store.close()

    asyncio.run(run())
    for f in _files(db):  # the power cut: the page cache's commits are gone
        shutil.copy(saved / f.name, f)
    db.with_name(db.name + "-shm").unlink(missing_ok=True)
    with sqlite3.connect(db) as conn:
        kept = {r[0] for r in conn.execute("SELECT scope FROM idempotency")}
    assert kept == {_scope("c0").storage_key()}, "the snapshot lost c1 and c2"

    def tail(writer: str, seg: int, offset: int) -> Any:
        return records_since(audit_dir, writer, seg, offset) if writer_is_dead(audit_dir, writer) else None

    done = replay(db, tail, 86400)
    assert (done.writers, done.restored) == (1, 2)
    assert replay(db, tail, 86400).writers == 0, "the writer's row went with its replay"

    async def retry() -> None:
        store = open_store("sqlite", path=db, url=None)
        try:
            again = await store.begin(_scope("c1"), "h-c1", 3600, lease_s=30)
            assert isinstance(again, Owner) and again.previous_unknown  # ask the exchange first
            other = await store.begin(_scope("c2"), "different order", 3600, lease_s=30)
            assert isinstance(other, Conflict)  # as before the power cut
            first = await store.begin(_scope("c0"), "h0", 3600, lease_s=30)
            assert isinstance(first, InFlight)  # the claim that was durable is untouched
        finally:
            await store.close()

    asyncio.run(retry())


def test_replay_raises_the_nonce_floor_a_power_cut_took(tmp_path: Path) -> None:
    """Nonce orders whose batches a power cut took: the store's nonce row goes back to before
    them, and without the replay the key's next nonce would repeat one that was signed. The
    replay raises the key's floor above every nonce the durable decision records name."""
    db, audit_dir, saved = tmp_path / "state.db", tmp_path / "audit", tmp_path / "saved"
    audit_dir.mkdir()
    saved.mkdir()
    key_id, now = "kraken:k", 1_000_000  # the clock stands still: nonces come from the row

    async def run() -> None:
        store = open_store("sqlite", path=db, url=None)
        audit = AuditWriter(audit_dir, KEY, "w1")
        await audit.start()
        commit = group_commit(store, None, audit)
        assert commit is not None
        try:
            # the key's first batch: FULL, its fingerprint's row durable
            await commit.claim(_scope("n0"), "h0", 3600, lease_s=30, record=_record("n0"),
                               nonce=NonceRequest(key_id, "us", now))
            for f in _files(db):  # the store as the disk holds it: nothing after this is fsynced
                shutil.copy(f, saved / f.name)
            for coid in ("n1", "n2"):
                claimed = await commit.claim(_scope(coid), f"h-{coid}", 3600, lease_s=30,
                                             record=_record(coid), nonce=NonceRequest(key_id, "us", now))
                assert claimed.recorded and claimed.nonce is not None  # signed and sent now
        finally:
            await audit.close()
            await store.close()

    asyncio.run(run())
    for f in _files(db):  # the power cut
        shutil.copy(saved / f.name, f)
    db.with_name(db.name + "-shm").unlink(missing_ok=True)
    # what may have been signed: every nonce a durable decision record names (read from the trail)
    signed = [r["nonce"] for r in iter_records(audit_dir, KEY) if r.get("phase") == "decision"]
    assert len(signed) == 3 and len(set(signed)) == 3
    with sqlite3.connect(db) as conn:
        (last,) = conn.execute("SELECT last FROM nonces WHERE key_id = ?", (key_id,)).fetchone()
    # the precondition: without the replay the next nonce, max(clock, last + 1), is one signed
    assert last + 1 in signed, "the snapshot lost n1's and n2's nonces"

    def tail(writer: str, seg: int, offset: int) -> Any:
        return records_since(audit_dir, writer, seg, offset) if writer_is_dead(audit_dir, writer) else None

    done = replay(db, tail, 86400)
    assert (done.writers, done.restored, done.nonces) == (1, 2, 1)

    async def after() -> None:
        store = open_store("sqlite", path=db, url=None)
        try:
            nxt = await store.next_nonce(key_id, "us", now_us=now)
            assert nxt > max(signed)
            assert await store.raise_floor(key_id, "us", 0) == nxt  # a floor is never lowered
        finally:
            await store.close()

    asyncio.run(after())


def test_replay_leaves_a_running_writer_alone(tmp_path: Path) -> None:
    db, audit_dir = tmp_path / "state.db", tmp_path / "audit"
    audit_dir.mkdir()

    async def run() -> None:
        store = open_store("sqlite", path=db, url=None)
        audit = AuditWriter(audit_dir, KEY, "alive")
        await audit.start()
        commit = group_commit(store, None, audit)
        assert commit is not None
        try:
            await commit.claim(_scope("c0"), "h0", 3600, lease_s=30, record=_record("c0"))
            assert not writer_is_dead(audit_dir, "alive")
            seen: list[str] = []

            def tail(writer: str, seg: int, offset: int) -> Any:
                seen.append(writer)
                return records_since(audit_dir, writer, seg, offset) if writer_is_dead(audit_dir, writer) else None

            assert replay(db, tail, 86400).writers == 0 and seen == ["alive"]
        finally:
            await audit.close()
            await store.close()
        assert writer_is_dead(audit_dir, "alive")

    asyncio.run(run())


def test_batches_with_a_claim_the_trail_cannot_restore_stay_fsynced(tmp_path: Path) -> None:
    """A claim without a decision record in its batch (the step-by-step path), an owner's
    policy budget charged in the batch, and the first nonce of a key in this worker (its
    fingerprint's row in ``nonce_keys`` must be durable before a record may name it) are
    committed with synchronous=FULL: no record would bring them back after a power cut (a cap
    must never reopen, a nonce never repeat)."""
    db, audit_dir = tmp_path / "state.db", tmp_path / "audit"
    audit_dir.mkdir()
    modes: list[int] = []

    async def run() -> None:
        store = open_store("sqlite", path=db, url=None)
        audit = AuditWriter(audit_dir, KEY, "w1")
        await audit.start()
        commit = group_commit(store, None, audit)
        assert commit is not None
        transaction = store.transaction  # type: ignore[attr-defined]

        def watching(fn: Any, **kw: Any) -> Any:
            def inner(conn: sqlite3.Connection) -> Any:
                modes.append(conn.execute("PRAGMA synchronous").fetchone()[0])
                return fn(conn)
            return transaction(inner, **kw)

        store.transaction = watching  # type: ignore[attr-defined]
        try:
            await commit.claim(_scope("c0"), "h0", 3600, lease_s=30, record=_record("c0"))
            await commit.claim(_scope("c1"), "h1", 3600, lease_s=30, record=_record("c1"))
            await commit.claim(_scope("c2"), "h2", 3600, lease_s=30)  # no record in the batch
            await commit.claim(_scope("c3"), "h3", 3600, lease_s=30, record=_record("c3"))
            # an owner's nonce and its policy budget: the trail cannot bring either back
            await commit.claim(_scope("c4"), "h4", 3600, lease_s=30, record=_record("c4"),
                               nonce=NonceRequest("kraken:k", "us", 1_000_000))
            await commit.claim(_scope("c5"), "h5", 3600, lease_s=30, record=_record("c5"),
                               budgets=(Budget("notional|bot", Decimal(5), 3600, Decimal(100)),))
            await commit.claim(_scope("c6"), "h6", 3600, lease_s=30, record=_record("c6"))
            # the key's row is durable now: its next nonce is restorable, another key's first is not
            await commit.claim(_scope("c7"), "h7", 3600, lease_s=30, record=_record("c7"),
                               nonce=NonceRequest("kraken:k", "us", 1_000_000))
            await commit.claim(_scope("c8"), "h8", 3600, lease_s=30, record=_record("c8"),
                               nonce=NonceRequest("kraken:other", "us", 1_000_000))
        finally:
            await audit.close()
            await store.close()

    asyncio.run(run())
    # FULL (the journal row), NORMAL, FULL (no record), NORMAL, FULL (the nonce key's first),
    # FULL (budget), NORMAL, NORMAL (the same key's next nonce), FULL (another key's first)
    assert modes == [2, 1, 2, 1, 2, 2, 1, 1, 2]
    with sqlite3.connect(db) as conn:
        keys = dict(conn.execute("SELECT key_id, unit FROM nonce_keys").fetchall())
    assert keys == {"kraken:k": "us", "kraken:other": "us"}


def test_a_key_s_fingerprint_row_names_the_unit_it_signed_with(tmp_path: Path) -> None:
    """A key that signed before the fingerprint rows existed (a nonce outside the batches), then
    asked in another unit in a batch: the claim is refused and no row is written, so the
    replay's unit is always the one the key's nonces are in."""
    db, audit_dir = tmp_path / "state.db", tmp_path / "audit"
    audit_dir.mkdir()

    async def run() -> None:
        store = open_store("sqlite", path=db, url=None)
        audit = AuditWriter(audit_dir, KEY, "w1")
        await audit.start()
        commit = group_commit(store, None, audit)
        assert commit is not None
        try:
            await store.next_nonce("kraken:k", "us", now_us=1_000_000)
            with pytest.raises(NonceUnitChanged):
                await commit.claim(_scope("c0"), "h0", 3600, lease_s=30, record=_record("c0"),
                                   nonce=NonceRequest("kraken:k", "ms", 1_000_000))
            with sqlite3.connect(db) as conn:
                assert conn.execute("SELECT COUNT(*) FROM nonce_keys").fetchone() == (0,)
            await commit.claim(_scope("c1"), "h1", 3600, lease_s=30, record=_record("c1"),
                               nonce=NonceRequest("kraken:k", "us", 1_000_000))
        finally:
            await audit.close()
            await store.close()

    asyncio.run(run())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT key_id, unit FROM nonce_keys").fetchall() == [("kraken:k", "us")]


def test_new_batch_work_is_judged_for_the_journal_first() -> None:
    """proxy.state.batches._restorable decides which batches may commit without fsync: all it
    holds must be restorable from the trail or safe to lose. A new kind of op, or a new field
    of a claim (say, a nonce allocated in the batch: a lost one could be reused), must be judged
    there before it can ride a batch whose COMMIT is not fsynced."""
    assert set(get_args(Op)) == {Claim, Complete, Abandon, Outcome}
    assert {f.name for f in fields(Claim)} == {
        "scope", "content_hash", "ttl_s", "lease_s", "spend", "record", "future", "result",
        "refused", "error", "recorded", "nonce", "nonce_value", "budgets", "over"}
    # a nonce is restorable through its key's fingerprint row (key id and unit): a new field
    # of the request must be judged too
    assert {f.name for f in fields(NonceRequest)} == {"key_id", "unit", "now_us"}
