"""At most once per client order id: the idempotency state machine around a placement.

A repeat with the same content replays the first answer, a concurrent one waits for it, other
content is a conflict. When the first answer was lost (timeout, crash), a retry asks the
exchange for the order by its id before placing (``proxy.pipeline.lookup``). Batches are
placed at most once as a whole, and each of their ids is claimed on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from proxy.errors import IdempotencyConflict, NotReady, Refusal, UpstreamError, UpstreamTimeout
from proxy.exchanges.base import Credentials
from proxy.exchanges.client_order_ids import Lookup
from proxy.model.request import Prepared, Stamp
from proxy.pipeline.accounts import Account
from proxy.pipeline.decision import Decisions, RequestContext, error_reply
from proxy.pipeline.http import Reply
from proxy.pipeline.lookup import (
    MAX_LOOKUP_ROUNDS,
    UNKNOWN_OUTCOME,
    LooksUpOrders,
    batch_ids,
    batch_scope,
    content_digest,
    earlier_digests,
    found_headers,
    is_unknown,
    judge,
    looks_up,
    round_scope,
)
from proxy.pipeline.send import Held
from proxy.policy.evaluate import Decision, over_budget
from proxy.policy.runtime import refusal as policy_refusal
from proxy.policy.runtime import stored_amount
from proxy.state import (
    BeginResult,
    Conflict,
    IdempotencyScope,
    InFlight,
    Owner,
    Replay,
    StateStore,
    StoredResponse,
)
from proxy.state.group_commit import Budget, Claimed, GroupCommit, Spend

IDEMPOTENCY_WAIT_S = 15.0
#: exchange answers that mean the order was refused before execution (rate limit, IP ban)
NOT_EXECUTED_STATUSES = frozenset({418, 429})
REPLAY_HEADER = ("x-proxy-idempotent-replay", "true")

#: spend the decision's budgets just before sending; refuses when over budget
Charge = Callable[[RequestContext, Decision], Awaitable[Decision]]
#: stamp, sign, record and forward; returns the exchange's answer
SendOne = Callable[[RequestContext, Account, Prepared, Credentials, str], Awaitable[Reply]]


class SendsRecorded(Protocol):
    """What the group commit's way to sending needs from the sender (proxy.pipeline.send)."""

    def batchable(self, account: Account) -> bool: ...
    def hold(self, ctx: RequestContext, account: Account, creds: Credentials
             ) -> contextlib.AbstractAsyncContextManager[Held]: ...
    def time_stamp(self, account: Account) -> Stamp: ...
    def nonce_stamp(self, nonce: int) -> Stamp: ...
    def weight_spend(self, account: Account, prepared: Prepared) -> Spend | None: ...
    def weight_refused(self, account: Account, retry_after: int) -> Refusal: ...
    async def send_recorded(self, ctx: RequestContext, account: Account, prepared: Prepared,
                            creds: Credentials, rule: str) -> Reply: ...


class Once:
    """The idempotency state machine of one worker, over any ``StateStore``."""

    def __init__(
        self, *, store: StateStore, decisions: Decisions, charge: Charge, send: SendOne,
        ttl_s: int, lease_s: float, wait_s: float = IDEMPOTENCY_WAIT_S,
        commit: GroupCommit | None = None, sender: SendsRecorded | None = None,
    ) -> None:
        self.store = store
        #: the worker's group commit (proxy.state.group_commit); None: one step at a time
        self.commit = commit
        self.sender = sender
        self.decisions = decisions
        self.charge = charge
        self.send = send
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self.wait_s = wait_s

    async def single(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials,
        decision: Decision, coid: str,
    ) -> Reply:
        """Place one order at most once per (client, account, client order id)."""
        async with contextlib.AsyncExitStack() as held:  # a pool's key, a nonce key's lock
            return await self._single(ctx, account, prepared, creds, decision, coid, held)

    async def _single(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials,
        decision: Decision, coid: str, held: contextlib.AsyncExitStack,
    ) -> Reply:
        assert ctx.client is not None
        base = IdempotencyScope(ctx.client, account.name, coid)
        digest = content_digest(prepared)
        lookups = account.exchange if looks_up(account.exchange) else None
        for n in range(MAX_LOOKUP_ROUNDS + 1):
            scope = round_scope(base, n)
            claimed: Claimed | None = None
            signing = creds
            if n == 0 and self._batchable(account, decision):
                claimed, signing = await self._claim_recorded(ctx, account, prepared, creds, decision,
                                                              scope, digest, held)
                result: BeginResult = claimed.result
            else:
                result = await self._begin(scope, digest)
            for earlier in earlier_digests(digest) if isinstance(result, Conflict) else ():
                result = await self._begin(scope, earlier)  # claimed before a digest format change
                if not isinstance(result, Conflict):
                    digest = earlier
                    break
            if isinstance(result, InFlight):
                result = await self.store.wait(scope, self.wait_s, content_hash=digest, ttl_s=self.ttl_s,
                                               lease_s=self.lease_s)
            if isinstance(result, InFlight):
                raise NotReady("an order with this client order id is still in flight; retry shortly")
            if isinstance(result, Conflict):
                raise IdempotencyConflict(
                    f"client order id {coid!r} was already used for a different order; use a new id",
                    rule="idempotency",
                )
            if isinstance(result, Replay):
                if lookups is not None and is_unknown(result.response):
                    continue  # that attempt's outcome is unknown: the next round asks the exchange
                return await self._replay(ctx, result.response)
            if n == 0 and not result.previous_unknown:
                return await self._place(ctx, account, prepared, signing, decision, scope, result.token,
                                         mark_unknown=lookups is not None, claimed=claimed)
            if lookups is None:
                # An earlier attempt died without an answer: it may have been placed. Never guess.
                refusal = UpstreamError(
                    f"an earlier attempt with client order id {coid!r} ended without an answer; query "
                    "the order by that id and, if it is absent, place it again with a new id",
                    rule="idempotency.unknown_outcome",
                )
                await self._complete(scope, _stored(ctx, refusal), result.token)
                raise refusal
            return await self._look_up_then_place(ctx, account, prepared, creds, decision, lookups,
                                                  scope, result.token, first=n == 0)
        raise UpstreamError(
            f"the outcome of client order id {coid!r} stayed unknown after {MAX_LOOKUP_ROUNDS} "
            "lookups; query the order by that id yourself", rule="idempotency.unknown_outcome",
        )

    def _batchable(self, account: Account, decision: Decision) -> bool:
        """Whether the claim, the budgets, the weight spend and the decision record can share
        one group commit: a sender that can take it from there, and no report-mode budgets
        (their would-deny changes the record, so they are charged one step at a time)."""
        return (self.commit is not None and self.sender is not None
                and not (decision.charges and decision.report) and self.sender.batchable(account))

    async def _claim_recorded(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials,
        decision: Decision, scope: IdempotencyScope, digest: str, held: contextlib.AsyncExitStack,
    ) -> tuple[Claimed, Credentials]:
        """Claim the id, spend the weight, allocate a nonce exchange's nonce and make the
        decision record durable in the worker's next group commit, holding the pool's key and
        the nonce key's lock (``held``) until the exchange answers if it is the owner. The
        record names the stamp that is signed: a time stamp taken now, or the batch's nonce.
        Returns the claim and the key to sign with."""
        assert self.commit is not None and self.sender is not None
        budgets = tuple(Budget(c.key, stored_amount(c), c.window_s, c.limit) for c in decision.charges)
        if not budgets:
            await self.charge(ctx, decision)  # only notes a report-mode would_deny
        version, index = ctx.key_version, ctx.key_index
        key = await held.enter_async_context(self.sender.hold(ctx, account, creds))
        ctx.stamp = self.sender.time_stamp(account) if key.nonce is None else None
        claimed = await self.commit.claim(
            scope, digest, self.ttl_s, lease_s=self.lease_s,
            spend=self.sender.weight_spend(account, prepared),
            record=self.decisions.record(ctx, "allow", decision.rule, "decision"), nonce=key.nonce,
            budgets=budgets,
        )
        if claimed.recorded:
            ctx.decided_rule = decision.rule  # the outcome record repeats the decision's rule
            if claimed.nonce is not None:
                ctx.stamp = self.sender.nonce_stamp(claimed.nonce)
        else:
            ctx.stamp = None  # not sent with this stamp; a later step takes its own
            ctx.key_version, ctx.key_index = version, index
            await held.aclose()  # not sent now: a later step leases and locks again
        return claimed, key.creds

    async def _begin(self, scope: IdempotencyScope, digest: str) -> BeginResult:
        if self.commit is not None:  # in queue order with this worker's queued completions
            return (await self.commit.claim(scope, digest, self.ttl_s, lease_s=self.lease_s)).result
        return await self.store.begin(scope, digest, self.ttl_s, lease_s=self.lease_s)

    async def _complete(self, scope: IdempotencyScope, response: StoredResponse, token: str) -> None:
        """Keep the answer for replay: queued into the next group commit (the bot does not wait;
        a completion lost to a crash makes the retry look the order up), or stored now."""
        if self.commit is not None:
            self.commit.complete(scope, response, token=token, ttl_s=self.ttl_s)
        else:
            await self.store.complete(scope, response, token=token, ttl_s=self.ttl_s)

    async def _abandon(self, scope: IdempotencyScope, token: str) -> None:
        if self.commit is not None:
            await self.commit.abandon(scope, token=token)
        else:
            await self.store.abandon(scope, token=token)

    async def batch(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials,
        decision: Decision,
    ) -> Reply:
        """Place a batch at most once: its record is its sorted set of ids; an identical retry
        replays, the same ids with other content are a conflict. Each id is also claimed on its
        own, so no id is reused by a single order or another batch. A lost answer is kept as the
        batch's answer (no lookup for batches)."""
        assert ctx.client is not None
        ids = batch_ids(prepared)
        ctx.client_order_ids = tuple(ids)
        scope, digest, ttl = batch_scope(ctx.client, account.name, ids), content_digest(prepared), self.ttl_s
        result = await self.store.begin(scope, digest, ttl, lease_s=self.lease_s)
        for earlier in earlier_digests(digest) if isinstance(result, Conflict) else ():
            result = await self.store.begin(scope, earlier, ttl, lease_s=self.lease_s)  # an older format
            if not isinstance(result, Conflict):
                digest = earlier
                break
        if isinstance(result, InFlight):
            result = await self.store.wait(scope, self.wait_s, content_hash=digest, ttl_s=ttl,
                                           lease_s=self.lease_s)
        if isinstance(result, InFlight):
            raise NotReady("a batch with these client order ids is still in flight; retry shortly")
        if isinstance(result, Conflict):
            raise IdempotencyConflict("these client order ids were already used for a different "
                                      "batch; use new ids", rule="idempotency")
        if isinstance(result, Replay):
            return await self._replay(ctx, result.response)
        if result.previous_unknown:  # an earlier attempt died mid-flight: it may have been placed
            refusal = UpstreamError("an earlier attempt of this batch ended without an answer; query "
                                    "its orders by id", rule="idempotency.unknown_outcome")
            await self.store.complete(scope, _stored(ctx, refusal), token=result.token, ttl_s=ttl)
            raise refusal
        claimed: list[tuple[IdempotencyScope, str]] = []
        try:
            for coid in ids:  # every id on its own: "batch:" content never equals a single order's
                one = IdempotencyScope(ctx.client, account.name, coid)
                mine = await self.store.begin(one, f"batch:{digest}", ttl, lease_s=self.lease_s)
                if isinstance(mine, Owner):
                    claimed.append((one, mine.token))
                    continue
                raise IdempotencyConflict(f"client order id {coid!r} was already used for another "
                                          "order or batch; use a new id", rule="idempotency")
        except BaseException:
            for one, token in claimed:
                await self.store.abandon(one, token=token)
            await self.store.abandon(scope, token=result.token)
            raise
        reply: Reply | None = None
        try:
            reply = await self._place(ctx, account, prepared, creds, decision, scope, result.token,
                                      mark_unknown=False)
            return reply
        finally:
            used = _stored(ctx, IdempotencyConflict("this client order id was used in a batch",
                                                    rule="idempotency"))
            # refused unexecuted (429, 418): the ids stay free for the retry, as the batch does
            executed = ctx.sent and not (reply is not None and reply.status in NOT_EXECUTED_STATUSES)
            for one, token in claimed:
                if executed:
                    await self.store.complete(one, used, token=token, ttl_s=ttl)
                else:
                    await self.store.abandon(one, token=token)

    async def _replay(self, ctx: RequestContext, stored: StoredResponse) -> Reply:
        ctx.idempotent_replay = True
        await self.decisions.durable(ctx, "allow", "idempotency.replay", phase="decision")
        self.decisions.log(ctx, "allow", "idempotency.replay", stored.status, None)
        return Reply(stored.status, (*stored.headers, REPLAY_HEADER), stored.body)

    async def _place(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials,
        decision: Decision, scope: IdempotencyScope, token: str, *, mark_unknown: bool,
        claimed: Claimed | None = None,
    ) -> Reply:
        """Send the order as the owner of ``scope`` and remember the answer. ``claimed``: the
        group commit spent its weight and recorded its decision already (or found the weight
        over budget, and kept no claim)."""
        if claimed is not None and claimed.refused is not None:
            assert self.sender is not None
            raise self.sender.weight_refused(account, claimed.refused.retry_after)
        if claimed is not None and claimed.over is not None:  # a policy budget: nothing was kept
            over, total = claimed.over
            raise policy_refusal(over_budget(decision, decision.charges[over], total))
        try:
            if claimed is not None and claimed.recorded:
                assert self.sender is not None
                reply = await self.sender.send_recorded(ctx, account, prepared, creds, decision.rule)
            else:
                decision = await self.charge(ctx, decision)  # over budget: abandoned below, not sent
                reply = await self.send(ctx, account, prepared, creds, decision.rule)
        except (UpstreamTimeout, UpstreamError) as refusal:
            if ctx.sent:  # the exchange may have acted: a retry must not simply place it again
                await self._complete(scope, _stored(ctx, refusal, unknown=mark_unknown), token)
            else:
                await self._abandon(scope, token)
            raise
        except BaseException:
            if not ctx.sent:
                await self._abandon(scope, token)
            raise
        if reply.status in NOT_EXECUTED_STATUSES:
            # Rate limited or banned: the exchange did not act, so a retry after the cool-down
            # may place the order (replaying the 429 for a day would block the bot's retries).
            await self._abandon(scope, token)
            return reply
        # A 5xx leaves the execution status unknown (exchanges say so): where the exchange can be
        # asked, the next retry looks the order up instead of replaying the 5xx.
        unknown = mark_unknown and reply.status >= 500
        headers = (*reply.headers, UNKNOWN_OUTCOME) if unknown else reply.headers
        await self._complete(scope, StoredResponse(reply.status, headers, reply.body), token)
        return reply

    async def _look_up_then_place(
        self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials,
        decision: Decision, lookups: LooksUpOrders, scope: IdempotencyScope, token: str, *, first: bool,
    ) -> Reply:
        """An earlier attempt's outcome is unknown: ask the exchange by client order id.
        Found: its answer stands for the placement. Absent: place it now. Unknown: say so;
        the next retry asks again."""
        ctx.order_lookup = "unknown"
        failure: Refusal | None = None
        found: Reply | None = None
        try:
            for lookup in lookups.order_lookups(prepared):
                answer = await self.send(ctx.lookup(lookup), account, lookup, creds, "idempotency.lookup")
                outcome, shown = judge(lookups, prepared, answer.status, answer.body)
                if outcome is not Lookup.ABSENT:
                    ctx.order_lookup = str(outcome)
                    found = Reply(answer.status, answer.headers, shown) if outcome is Lookup.FOUND else None
                    break
            else:
                ctx.order_lookup = str(Lookup.ABSENT)
        except (UpstreamTimeout, UpstreamError) as exc:
            failure = exc
        except BaseException:
            await self._release_unknown(ctx, scope, token, first, None)
            raise
        if ctx.order_lookup == Lookup.ABSENT:
            return await self._place(ctx, account, prepared, creds, decision, scope, token, mark_unknown=True)
        if found is not None:
            reply = Reply(found.status, found_headers(found.headers), found.body)
            self.decisions.log(ctx, "allow", "idempotency.lookup", reply.status, reply.status)
            await self._complete(scope, StoredResponse(reply.status, reply.headers, reply.body), token)
            return reply
        refusal: Refusal = UpstreamError(
            f"an earlier attempt with client order id {prepared.client_order_id!r} ended without "
            "an answer and the exchange could not say whether the order exists; retry with the "
            "same id", rule="idempotency.lookup_failed",
        )
        if isinstance(failure, UpstreamTimeout):
            refusal = UpstreamTimeout(refusal.message, rule="idempotency.lookup_failed")
        await self._release_unknown(ctx, scope, token, first, refusal)
        raise refusal

    async def _release_unknown(
        self, ctx: RequestContext, scope: IdempotencyScope, token: str, first: bool, refusal: Refusal | None
    ) -> None:
        """The outcome is still unknown: a round record is simply released (the next retry
        claims it again); the placement's own record keeps the unknown mark."""
        if not first:
            await self._abandon(scope, token)
            return
        refusal = refusal or UpstreamError("the order's outcome is unknown", rule="idempotency.lookup_failed")
        await self._complete(scope, _stored(ctx, refusal, unknown=True), token)


def _stored(ctx: RequestContext, refusal: Refusal, *, unknown: bool = False) -> StoredResponse:
    """A refusal as the answer kept for a client order id (replayed to retries)."""
    reply = error_reply(ctx.request_id, refusal, ctx.answer_as)
    headers = (*reply.headers, UNKNOWN_OUTCOME) if unknown else reply.headers
    return StoredResponse(reply.status, headers, reply.body)
