"""One worker's group commit on a real sqlite store and audit trail, for counting the disk
syncs of one batch under strace: ``python -m tests.state.journal_child STATE_DB AUDIT_DIR``
(the audit chain key comes in the environment).

Between its markers (``getpgid`` of the pids in ``MARKS``, which never exist) it makes three
batches: the worker's first (its journal row is made durable: two syncs), then one with a
claim and its decision record, then one with a completion and an outcome record; then a nonce
key's first batch (its ``nonce_keys`` row is made durable: two syncs) and its next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from proxy.audit.writer import AuditWriter
from proxy.model.sensitive import Secret
from proxy.state import IdempotencyScope, StoredResponse, open_store
from proxy.state.batches import group_commit
from proxy.state.group_commit import NonceRequest

MARKS = (1_000_000_001, 1_000_000_002, 1_000_000_003, 1_000_000_004, 1_000_000_005, 1_000_000_006)


def mark(n: int) -> None:
    with contextlib.suppress(OSError):  # no such process: only the syscall matters
        os.getpgid(MARKS[n])


def record(coid: str) -> dict[str, str]:
    return {"request_id": coid, "phase": "decision", "decision": "allow", "client": "bot",
            "account": "main", "client_order_id": coid}


async def main(db: str, audit_dir: str) -> None:
    store = open_store("sqlite", path=Path(db), url=None)
    audit = AuditWriter(Path(audit_dir), Secret(os.environ.pop("AUDIT_TEST_KEY")), "journal-child")
    await audit.start()
    commit = group_commit(store, None, audit)
    assert commit is not None
    try:
        mark(0)
        await commit.claim(IdempotencyScope("bot", "main", "c0"), "h0", 3600, lease_s=30,
                           record=record("c0"))
        mark(1)
        claimed = await commit.claim(IdempotencyScope("bot", "main", "c1"), "h1", 3600, lease_s=30,
                                     record=record("c1"))
        assert claimed.recorded
        mark(2)
        commit.complete(IdempotencyScope("bot", "main", "c1"), StoredResponse(200, (), b"ok"),
                        token=claimed.result.token, ttl_s=3600)  # type: ignore[union-attr]
        commit.outcome({"request_id": "c1", "phase": "outcome", "upstream_status": 200})
        await commit.drain()
        mark(3)
        for n, coid in enumerate(("n0", "n1"), start=4):
            nonced = await commit.claim(IdempotencyScope("bot", "main", coid), f"h-{coid}", 3600,
                                        lease_s=30, record=record(coid),
                                        nonce=NonceRequest("kraken:k", "us", 1_000_000))
            assert nonced.recorded and nonced.nonce is not None
            mark(n)
    finally:
        await audit.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
