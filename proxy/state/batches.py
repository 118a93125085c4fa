"""The backends' side of the group commit (proxy.state.group_commit): one batch made durable.

sqlite: the whole batch on the store's one thread, one transaction committed without fsync,
then the audit append with the batch's one fdatasync (proxy.state.journal). Redis: one
pipelined round trip, then the audit append on the audit writer's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from proxy.errors import NotReady
from proxy.state.base import Owner
from proxy.state.group_commit import (
    Abandon,
    Claim,
    Complete,
    DurableLog,
    GroupCommit,
    Op,
    Outcome,
    Spend,
    SpendAnswer,
    audit_results,
    records_of,
)
from proxy.state.journal import DIGEST, JournalLog, mark_fn

log = logging.getLogger("proxy.state.group_commit")


class SqliteBatches:
    """A batch on the sqlite store's thread: one transaction for every claim, completion and
    abandon (a SAVEPOINT per claim undoes one whose weight does not fit), the weight spends
    on the rate-limit file, then one audit append, all in one thread hop.

    One fsync per batch: the transaction commits without one when the audit trail can stand in
    for it (proxy.state.journal: the records carry what a start-up replay needs to restore the
    claims a power cut loses), and the audit append's fdatasync is the batch's durability
    point. COMMIT first, then the append: a durable decision record always has its claim at
    least in the OS page cache, which a ``kill -9`` does not lose.
    """

    def __init__(self, store: Any, limiter: Any | None) -> None:
        self._store = store  # SqliteStateStore (begin_fn, complete_fn, abandon_fn, transaction)
        self._limiter = limiter  # SqliteLimiter (hit_sync) or None
        self._marked = False  # this worker's journal row is durable (its first batch was FULL)
        self._audit: object | None = None  # the trail last seen, and whether it is a journal:
        self._journal: JournalLog | None = None  # (a protocol isinstance walks its members)

    async def apply(self, ops: list[Op], audit: DurableLog) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._store.executor, self._apply, ops, audit)

    def _apply(self, ops: list[Op], audit: DurableLog) -> None:
        store = self._store
        now = store.now_us()
        steps: list[tuple[Op, Callable[[Any], Any]]] = []
        for op in ops:
            if isinstance(op, Claim):
                steps.append((op, store.begin_fn(op.scope, op.content_hash, op.ttl_s, op.lease_s, now)))
            elif isinstance(op, Complete):
                steps.append((op, store.complete_fn(op.scope, op.response, op.token,
                                                    now + int(op.ttl_s * 1_000_000))))
            elif isinstance(op, Abandon):
                steps.append((op, store.abandon_fn(op.scope, op.token)))
        if audit is not self._audit:
            self._audit, self._journal = audit, audit if isinstance(audit, JournalLog) else None
        journal = self._journal
        mark = None if journal is None else mark_fn(journal.writer_id, *journal.position())
        journaled = mark is not None and self._marked and all(_restorable(op) for op in ops)

        def tx(conn: Any) -> None:
            for op, step in steps:
                if not isinstance(op, Claim):
                    done = step(conn)
                    if isinstance(op, Abandon):
                        op.done = done
                    continue
                conn.execute("SAVEPOINT claim")
                op.result = step(conn)
                if op.spend is not None and op.wants_record:
                    try:
                        hit = self._spend(op.spend)
                    except NotReady as exc:
                        op.error = exc
                        hit = None
                    if hit is None or not hit.allowed:
                        op.refused = hit
                        conn.execute("ROLLBACK TO claim")
                conn.execute("RELEASE claim")
            if mark is not None:
                mark(conn)

        if steps:
            try:
                store.transaction(tx, durable=not journaled)
                self._marked = mark is not None
            except NotReady as exc:
                for op, _ in steps:
                    if isinstance(op, Claim | Abandon):
                        op.error = exc
                    elif isinstance(op, Complete):
                        op.failed = True
        pairs = records_of(ops)  # a failed transaction leaves outcome records only
        if not pairs:
            return
        for claim, record in pairs:
            if claim is not None and _restorable(claim):
                record[DIGEST] = claim.content_hash  # what replay restores the claim with
        try:
            errors = audit.append_batch([r for _, r in pairs])
        except Exception as exc:  # nothing of this batch's records is durable
            errors = [NotReady(f"the audit trail is not writable ({type(exc).__name__})")] * len(pairs)
        failed = audit_results(pairs, errors)
        if failed:  # claims without a durable record: nothing is sent, free the ids
            undo = [store.abandon_fn(c.scope, c.result.token) for c in failed
                    if isinstance(c.result, Owner)]
            try:
                store.transaction(lambda conn: [fn(conn) for fn in undo])
            except NotReady:
                log.error("claims of %d unsent orders stay until their lease ends", len(undo))

    def _spend(self, spend: Spend) -> SpendAnswer:
        if self._limiter is None:
            raise NotReady("no rate-limit store")
        return self._limiter.hit_sync(spend.key, spend.limit, spend.window_s, spend.cost)  # type: ignore[no-any-return]


def _restorable(op: Op) -> bool:
    """Whether a power cut may take ``op``'s commit (proxy.state.journal): a claim whose
    decision record names its scope (an owner's is restored from it; a takeover lost leaves the
    expired claim it took over), a completion or abandon (the claim stays in flight: the retry
    looks the order up), an outcome record. Anything else makes the batch fsync its COMMIT."""
    if isinstance(op, Claim):
        r = op.record
        return r is not None and (r.get("client"), r.get("account"), r.get("client_order_id")) == (
            op.scope.client, op.scope.account, op.scope.client_order_id)
    return isinstance(op, Complete | Abandon | Outcome)


class RedisBatches:
    """A batch on Redis: every claim, completion and abandon in one pipelined round trip (each
    a Lua script, atomic on its own), the owners' weight spends concurrently, then one audit
    append and fdatasync on the audit writer's thread."""

    def __init__(self, store: Any, limiter: Any | None) -> None:
        self._store = store  # RedisStateStore (begin_call, complete_call, abandon_call, pipeline)
        self._limiter = limiter  # a WindowLimiter (async hit)

    async def apply(self, ops: list[Op], audit: DurableLog) -> None:
        store = self._store
        now = store.now_us()
        calls: list[tuple[Any, list[str], list[str | bytes]]] = []
        parsers: list[tuple[Op, Callable[[Any], Any] | None]] = []
        for op in ops:
            if isinstance(op, Claim):
                script, keys, args, parse = store.begin_call(op.scope, op.content_hash, op.ttl_s,
                                                             op.lease_s, now)
                calls.append((script, keys, args))
                parsers.append((op, parse))
            elif isinstance(op, Complete):
                calls.append(store.complete_call(op.scope, op.response, op.token, op.ttl_s, now))
                parsers.append((op, None))
            elif isinstance(op, Abandon):
                calls.append(store.abandon_call(op.scope, op.token))
                parsers.append((op, bool))
        if calls:
            try:
                replies = await store.pipeline(calls)
            except NotReady as exc:
                replies = [exc] * len(calls)
            for (op, parse), reply in zip(parsers, replies, strict=True):
                failed = isinstance(reply, Exception)
                if isinstance(op, Claim):
                    if failed:
                        op.error = reply if isinstance(reply, NotReady) else NotReady(
                            f"state store unreachable: redis: {reply}")
                    else:
                        assert parse is not None
                        op.result = parse(reply)
                elif isinstance(op, Abandon):
                    if failed:
                        op.error = NotReady(f"state store unreachable: redis: {reply}")
                    else:
                        op.done = bool(reply)
                elif isinstance(op, Complete):
                    op.failed = failed
        spenders = [op for op in ops if isinstance(op, Claim) and op.error is None
                    and op.spend is not None and op.wants_record]
        if spenders:
            answers = await asyncio.gather(*(self._spend(op.spend) for op in spenders if op.spend),
                                           return_exceptions=True)
            undo: list[Claim] = []
            for op, answer in zip(spenders, answers, strict=True):
                if isinstance(answer, BaseException):
                    op.error = answer if isinstance(answer, NotReady) else NotReady(
                        f"rate-limit store unreachable ({type(answer).__name__})")
                    undo.append(op)
                elif not answer.allowed:
                    op.refused = answer
                    undo.append(op)
            await self._undo(undo)
        pairs = records_of(ops)
        if not pairs:
            return
        loop = asyncio.get_running_loop()
        errors = await loop.run_in_executor(audit.executor, audit.append_batch, [r for _, r in pairs])
        await self._undo(audit_results(pairs, errors))

    async def _spend(self, spend: Spend) -> SpendAnswer:
        if self._limiter is None:
            raise NotReady("no rate-limit store")
        return await self._limiter.hit(spend.key, spend.limit, spend.window_s, spend.cost)  # type: ignore[no-any-return]

    async def _undo(self, claims: list[Claim]) -> None:
        calls = [self._store.abandon_call(c.scope, c.result.token) for c in claims
                 if isinstance(c.result, Owner)]
        if not calls:
            return
        try:
            await self._store.pipeline(calls)
        except NotReady:
            log.error("claims of %d unsent orders stay until their lease ends", len(calls))


def group_commit(store: object | None, limiter: object | None, audit: DurableLog | None,
                 on_error: Callable[[str], None] | None = None) -> GroupCommit | None:
    """The durability owner for this worker's store (None without a store or an audit trail)."""
    if store is None or audit is None:
        return None
    if hasattr(store, "begin_fn"):
        return GroupCommit(SqliteBatches(store, limiter if hasattr(limiter, "hit_sync") else None),
                           audit, on_error)
    if hasattr(store, "begin_call"):
        return GroupCommit(RedisBatches(store, limiter), audit, on_error)
    return None
