"""A worker's group commit in a process of its own, for the kill -9 tests:
``python -m tests.state.commit_child BACKEND LOCATION PREFIX AUDIT_DIR LEASE_S DIE_AT``
(the audit chain key comes in the environment, not argv).

Places orders forever, 16 at a time: claim (with a weight spend and a decision record; every
other order also with a nonce, as a nonce exchange's order) in the group commit, print
``durable COID TOKEN [NONCE]`` once the claim returns (the moment the proxy would send), then
queue the outcome record and the completion. ``DIE_AT``: ``none`` (the parent kills it),
``after_commit`` (SIGKILL itself in the fifth batch once the state store committed, before
its audit append) or ``after_audit`` (once the fifth batch's audit append is
durable, before any waiter wakes).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from pathlib import Path
from typing import Any

from proxy.audit.writer import AuditWriter
from proxy.errors import NotReady
from proxy.guards.rate_limits import open_limiter
from proxy.model.sensitive import Secret
from proxy.state import IdempotencyScope, StoredResponse, open_store
from proxy.state.base import wall_clock_us
from proxy.state.batches import group_commit
from proxy.state.group_commit import NonceRequest, Spend

CONCURRENCY = 16


def nonce_key(prefix: str) -> str:
    """The key whose nonces the child allocates (the parent reads its last one)."""
    return f"kraken:{prefix}key"


class _Dying:
    """The audit trail (and the store's journal: writer id, position), with a SIGKILL of this
    process at the chosen step of the fifth batch: ``after_commit`` as its append begins (the
    state store committed, without fsync), ``after_audit`` once the append is durable."""

    def __init__(self, inner: AuditWriter, die_at: str) -> None:
        self._inner = inner
        self._die_at = die_at
        self._batches = 0
        self.executor = inner.executor
        self.writer_id = inner.writer_id

    def position(self) -> tuple[int, int]:
        return self._inner.position()

    def append_batch(self, records: list[dict[str, Any]]) -> list[Exception | None]:
        self._batches += 1
        if self._die_at == "after_commit" and self._batches == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        errors = self._inner.append_batch(records)
        if self._die_at == "after_audit" and self._batches == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        return errors


async def main(backend: str, location: str, prefix: str, audit_dir: str, lease_s: float,
               die_at: str) -> None:
    if backend == "sqlite":
        store = open_store("sqlite", path=Path(location), url=None)
        limiter = open_limiter("sqlite", path=Path(location), url=None)
    else:
        store = open_store("redis", path=None, url=location, prefix=prefix)
        limiter = open_limiter("redis", path=None, url=location)
    audit = AuditWriter(Path(audit_dir), Secret(os.environ.pop("AUDIT_TEST_KEY")), f"child-{os.getpid()}")
    await audit.start()
    commit = group_commit(store, limiter, _Dying(audit, die_at))
    assert commit is not None
    print("started", flush=True)
    ids = itertools.count()

    async def one() -> None:
        while True:
            n = next(ids)
            coid = f"o{n}"
            nonce = NonceRequest(nonce_key(prefix), "us", wall_clock_us()) if n % 2 == 0 else None
            scope = IdempotencyScope("bot", "main", coid)
            record = {"request_id": coid, "phase": "decision", "decision": "allow", "client_order_id": coid}
            print(f"claiming {coid}", flush=True)
            try:
                claimed = await commit.claim(scope, "h", 3600, lease_s=lease_s,
                                             spend=Spend(f"weight|{prefix}", 10**9, 60, 1), record=record,
                                             nonce=nonce)
            except NotReady:
                continue
            if not claimed.recorded:
                continue
            signed = "" if claimed.nonce is None else f" {claimed.nonce}"
            print(f"durable {coid} {claimed.result.token}{signed}", flush=True)  # type: ignore[union-attr]
            commit.outcome({"request_id": coid, "phase": "outcome", "upstream_status": 200})
            commit.complete(scope, StoredResponse(200, (), coid.encode()),
                            token=claimed.result.token, ttl_s=3600)  # type: ignore[union-attr]

    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], a[3], float(a[4]), a[5]))
