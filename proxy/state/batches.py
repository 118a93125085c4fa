"""The backends' side of the group commit (proxy.state.group_commit): one batch made durable.

sqlite: the whole batch on the store's one thread, one transaction committed without fsync
when the audit trail can restore it, then the audit append with the batch's one fdatasync
(proxy.state.journal). Redis: one pipelined round trip for every claim and its weight spend,
then the audit append on the audit writer's thread.
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
from proxy.state.redis_store import WeightRefused

log = logging.getLogger("proxy.state.group_commit")


class SqliteBatches:
    """A batch on the sqlite store's thread: one transaction for every claim, completion and
    abandon (a SAVEPOINT per claim undoes one whose weight does not fit), owners' nonces and
    policy budgets in it too, the weight spends on the rate-limit file, then one audit append,
    all in one thread hop.

    One fsync per batch: the transaction commits without one when the audit trail can stand in
    for it (proxy.state.journal: the records carry what a start-up replay needs to restore the
    claims a power cut loses), and the audit append's fdatasync is the batch's durability
    point. COMMIT first, then the append: a durable decision record always has its claim at
    least in the OS page cache, which a ``kill -9`` does not lose. An owner's nonce is restored
    from the trail too (its record names the nonce and its key's fingerprint), once the
    fingerprint's row in ``nonce_keys`` is durable: the first batch of each key in this worker
    writes it and commits with fsync. A policy budget cannot be restored from the trail: a
    batch with one commits with fsync (``_restorable``).
    """

    def __init__(self, store: Any, limiter: Any | None) -> None:
        self._store = store  # SqliteStateStore (begin_fn, complete_fn, abandon_fn, transaction)
        self._limiter = limiter  # SqliteLimiter (hit_sync) or None
        self._marked = False  # this worker's journal row is durable (its first batch was FULL)
        self._audit: object | None = None  # the trail last seen, and whether it is a journal:
        self._journal: JournalLog | None = None  # (a protocol isinstance walks its members)
        self._keys: set[str] = set()  # fingerprints whose nonce_keys row is durable

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
        new_keys = {op.nonce.fingerprint for op in ops if isinstance(op, Claim)
                    and op.nonce is not None and op.nonce.fingerprint not in self._keys}
        journaled = (mark is not None and self._marked and not new_keys
                     and all(_restorable(op, self._keys) for op in ops))

        written: set[str] = set()

        def tx(conn: Any) -> None:
            for op, step in steps:
                if not isinstance(op, Claim):
                    done = step(conn)
                    if isinstance(op, Abandon):
                        op.done = done
                    continue
                conn.execute("SAVEPOINT claim")
                op.result = step(conn)
                if op.nonce is not None and op.wants_record:
                    self._allocate(conn, op)
                if op.budgets and op.wants_record and op.error is None:
                    self._charge(conn, op, now)
                if op.spend is not None and op.wants_record and op.error is None and op.over is None:
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
            for op, _ in steps:  # a FULL transaction (new keys): the rows of keys that
                # allocated (their unit is the nonces row's) are durable with its COMMIT
                if (isinstance(op, Claim) and op.nonce is not None and op.nonce_value is not None
                        and op.nonce.fingerprint in new_keys):
                    conn.execute("INSERT OR IGNORE INTO nonce_keys (fingerprint, key_id, unit)"
                                 " VALUES (?, ?, ?)", (op.nonce.fingerprint, op.nonce.key_id,
                                                       op.nonce.unit))
                    written.add(op.nonce.fingerprint)

        if steps:
            try:
                store.transaction(tx, durable=not journaled)
                self._marked = mark is not None
                self._keys.update(written)
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
            if claim is not None and _restorable(claim, self._keys):
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

    def _allocate(self, conn: Any, op: Claim) -> None:
        """The owner's nonce, in its claim's savepoint (a unit change refuses it, claim undone)."""
        assert op.nonce is not None
        try:
            op.allocated(self._store.nonce_fn(op.nonce.key_id, op.nonce.unit, op.nonce.now_us)(conn))
        except NotReady as exc:
            op.error = exc
            conn.execute("ROLLBACK TO claim")

    def _charge(self, conn: Any, op: Claim, now: int) -> None:
        """The owner's policy budgets, in its claim's savepoint: the first over its limit
        refuses the order, and the claim and the budgets already charged are undone."""
        for i, b in enumerate(op.budgets):
            total = self._store.window_fn(b.key, b.amount, b.window_s, b.limit, now)(conn)
            if total > b.limit:
                op.over = (i, total)
                conn.execute("ROLLBACK TO claim")
                return

    def _spend(self, spend: Spend) -> SpendAnswer:
        if self._limiter is None:
            raise NotReady("no rate-limit store")
        return self._limiter.hit_sync(spend.key, spend.limit, spend.window_s, spend.cost)  # type: ignore[no-any-return]


def _restorable(op: Op, keys: set[str]) -> bool:
    """Whether a power cut may take ``op``'s commit (proxy.state.journal): a claim whose
    decision record names its scope (an owner's is restored from it; a takeover lost leaves the
    expired claim it took over), with a nonce only if its key's fingerprint is in ``keys``
    (its ``nonce_keys`` row is durable, so replay can raise the key's floor to the nonce the
    record names), a completion or abandon (the claim stays in flight: the retry looks the
    order up), an outcome record. Anything else makes the batch fsync its COMMIT: a claim that
    charges policy budgets (a lost charge would reopen a cap), or a nonce of a key whose row is
    not known durable (a nonce must never repeat)."""
    if isinstance(op, Claim):
        r = op.record
        return (r is not None and (op.nonce is None or op.nonce.fingerprint in keys)
                and not op.budgets
                and (r.get("client"), r.get("account"), r.get("client_order_id")) == (
                    op.scope.client, op.scope.account, op.scope.client_order_id))
    return isinstance(op, Complete | Abandon | Outcome)


class RedisBatches:
    """A batch on Redis: every claim, completion, abandon and nonce in one pipelined round trip,
    each a Lua script, atomic on its own. A claim that carries a weight spend is CLAIM_SPEND_LUA:
    a new owner spends its weight from the same counter as RedisLimiter.hit, and a claim whose
    weight does not fit is undone in that script. Then the owners' policy budgets (one more
    round trip per budget index, only if there are any), then one audit append and fdatasync
    on the audit writer's thread."""

    def __init__(self, store: Any, limiter: Any | None) -> None:
        self._store = store  # RedisStateStore (begin_call, claim_spend_call, ..., pipeline)
        self._limiter = limiter if hasattr(limiter, "spend_call") else None  # RedisLimiter

    async def apply(self, ops: list[Op], audit: DurableLog) -> None:
        store = self._store
        now = store.now_us()
        calls: list[tuple[Any, list[str], list[str | bytes]]] = []
        parsers: list[tuple[Op, Callable[[Any], Any] | None]] = []
        for op in ops:
            if isinstance(op, Claim):
                spend = op.spend if op.record is not None else None  # only an order spends
                if spend is not None and self._limiter is not None:
                    counter = self._limiter.spend_call(spend.key, spend.limit, spend.window_s, spend.cost)
                    script, keys, args, parse = store.claim_spend_call(
                        op.scope, op.content_hash, op.ttl_s, op.lease_s, now, counter)
                else:
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
        # Nonces ride the same round trip, after the claims; one allocated for a claim that does
        # not own its id is skipped (nonces need only increase).
        nonces = [(op, store.nonce_call(op.nonce.key_id, op.nonce.unit, op.nonce.now_us))
                  for op in ops if isinstance(op, Claim) and op.nonce is not None]
        calls.extend(call[:3] for _, call in nonces)
        if calls:
            try:
                replies = await store.pipeline(calls)
            except NotReady as exc:
                replies = [exc] * len(calls)
            replies, allocated = replies[:len(parsers)], replies[len(parsers):]
            for (op, parse), reply in zip(parsers, replies, strict=True):
                failed = isinstance(reply, Exception)
                if isinstance(op, Claim):
                    if failed:
                        op.error = reply if isinstance(reply, NotReady) else NotReady(
                            f"state store unreachable: redis: {reply}")
                    else:
                        assert parse is not None
                        self._claimed(op, parse(reply))
                elif isinstance(op, Abandon):
                    if failed:
                        op.error = NotReady(f"state store unreachable: redis: {reply}")
                    else:
                        op.done = bool(reply)
                elif isinstance(op, Complete):
                    op.failed = failed
            await self._undo(self._allocate(nonces, allocated))
        if self._limiter is None:  # an order's weight cannot be spent: refuse it, free its id
            unspent = [op for op in ops if isinstance(op, Claim) and op.error is None
                       and op.spend is not None and op.wants_record]
            for op in unspent:
                op.error = NotReady("no rate-limit store")
            await self._undo(unspent)
        await self._undo(await self._charge([op for op in ops if isinstance(op, Claim) and op.budgets
                                             and op.error is None and op.refused is None
                                             and op.wants_record]))
        pairs = records_of(ops)
        if not pairs:
            return
        loop = asyncio.get_running_loop()
        errors = await loop.run_in_executor(audit.executor, audit.append_batch, [r for _, r in pairs])
        await self._undo(audit_results(pairs, errors))

    async def _charge(self, owners: list[Claim]) -> list[Claim]:
        """The owners' policy budgets, one pipelined round trip per budget index (the first
        over its limit refuses the order, the later ones are not charged, as one step at a
        time); returns the owners refused (their claim must go)."""
        refused: list[Claim] = []
        now = self._store.now_us()
        for i in range(max((len(op.budgets) for op in owners), default=0)):
            due = [op for op in owners if len(op.budgets) > i and op not in refused]
            calls = [self._store.window_call(b.key, b.amount, b.window_s, b.limit, now)
                     for b in (op.budgets[i] for op in due)]
            try:
                replies = await self._store.pipeline([call[:3] for call in calls])
            except NotReady as exc:
                replies = [exc] * len(calls)
            for op, call, reply in zip(due, calls, replies, strict=True):
                if isinstance(reply, Exception):
                    op.error = reply if isinstance(reply, NotReady) else NotReady(
                        f"state store unreachable: redis: {reply}")
                elif (total := call[3](reply)) > op.budgets[i].limit:
                    op.over = (i, total)
                else:
                    continue
                refused.append(op)
        return refused

    @staticmethod
    def _allocate(nonces: list[tuple[Claim, Any]], replies: list[Any]) -> list[Claim]:
        """Give each owner its nonce; returns the owners refused for want of one (their claim
        must go)."""
        failed: list[Claim] = []
        for (op, (_, _, _, parse)), reply in zip(nonces, replies, strict=True):
            if op.error is not None or op.refused is not None or not op.wants_record:
                continue  # not sent now: its nonce is skipped
            try:
                if isinstance(reply, Exception):
                    raise reply if isinstance(reply, NotReady) else NotReady(
                        f"state store unreachable: redis: {reply}")
                op.allocated(parse(reply))
            except NotReady as exc:
                op.error = exc
                failed.append(op)
        return failed

    @staticmethod
    def _claimed(op: Claim, result: Any) -> None:
        if isinstance(result, WeightRefused):  # the script undid the claim
            op.result, op.refused = Owner(token=result.token, previous_unknown=False), result
        else:
            op.result = result

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
