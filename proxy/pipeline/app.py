"""The request pipeline for bots (DESIGN.md "One request, start to finish"), as a bare ASGI app.

authenticate -> resolve account -> prepare (parse, canonicalise, classify) -> policy ->
audit decision (durable) -> stamp (time/nonce) -> sign -> forward -> audit outcome -> respond.

Every refusal is a contract error with ``X-Proxy-Error``, an audit record and one decision log
line; nothing is forwarded unless the decision record is durable first. A bare ASGI app (not a
router) keeps the hot path short and gives direct access to the raw path bytes, which path
tricks hide in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from proxy.errors import (
    BadRequest,
    Forbidden,
    IdempotencyConflict,
    NotReady,
    ProxyError,
    Refusal,
    TooLarge,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
)
from proxy.exchanges.base import Credentials
from proxy.exchanges.client_order_ids import Lookup
from proxy.guards.hooks import ExchangeSafety
from proxy.guards.prices import ReferencePrices
from proxy.model.request import Action, Category, Inbound, Intent, Prepared, Stamp
from proxy.ops.metrics import Metrics
from proxy.pipeline.accounts import Account
from proxy.pipeline.auth import TokenVerifier
from proxy.pipeline.lookup import (
    INJECTED_HEADER,
    MAX_LOOKUP_ROUNDS,
    UNKNOWN_OUTCOME,
    LooksUpOrders,
    batch_ids,
    batch_scope,
    content_digest,
    found_headers,
    inject,
    is_batch_placement,
    is_unknown,
    judge,
    round_scope,
)
from proxy.policy.evaluate import Decision, evaluate
from proxy.policy.model import PolicySet
from proxy.policy.runtime import PolicyRuntime, log_would_deny
from proxy.policy.runtime import refusal as policy_refusal
from proxy.state import Conflict, IdempotencyScope, InFlight, Owner, Replay, StateStore, StoredResponse
from proxy.upstream import Upstream, UpstreamResponse

log = logging.getLogger("proxy.decision")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_ACCOUNT = re.compile(rb"[a-z0-9][a-z0-9_-]{0,62}")
NONCE_LOCK_TIMEOUT_S = 10.0
IDEMPOTENCY_WAIT_S = 15.0
#: exchange answers that mean the order was refused before execution (rate limit, IP ban)
NOT_EXECUTED_STATUSES = frozenset({418, 429})


class ClockOffsets(Protocol):
    """Exchange time minus host time per account, in ms (0 when unknown)."""

    def offset_ms(self, account: str) -> int: ...


class AuditSink(Protocol):
    """Where decision and outcome records go; ``write`` returns once the record is durable."""

    async def write(self, record: Mapping[str, Any]) -> None: ...


@dataclass
class _Ctx:
    """What is known about one request so far; becomes its audit records and log line."""

    request_id: str
    method: str
    path: str
    started: float
    client: str | None = None
    account: str | None = None
    exchange: str | None = None
    category: str | None = None
    prepared: Prepared | None = None
    key_version: int | None = None
    stamp: Stamp | None = None
    sent: bool = False
    injected_coid: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class Pipeline:
    """The bot-facing ASGI application of one worker."""

    def __init__(
        self, *, accounts: Mapping[str, Account], policies: PolicySet, verifier: TokenVerifier,
        upstream: Upstream, audit: AuditSink, metrics: Metrics, max_body_bytes: int,
        store: StateStore | None = None, idempotency_ttl_s: int = 24 * 3600,
        clock_ns: Callable[[], int] = time.time_ns, reference_prices: ReferencePrices | None = None,
        upstream_timeout_s: float = 10.0, vault_timeout_s: float = 5.0,
        safety: ExchangeSafety | None = None,
    ) -> None:
        self.accounts = dict(accounts)
        #: swapped whole on reload (one assignment); each request reads it once
        self.policies = policies
        self.policy_runtime = PolicyRuntime(store, reference_prices or ReferencePrices(upstream))
        self.verifier = verifier
        self.upstream = upstream
        self.audit = audit
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.store = store
        self.idempotency_ttl_s = idempotency_ttl_s
        #: how long a client order id stays claimed by a live request before it is presumed dead
        self.lease_s = owner_lease_s(upstream_timeout_s, vault_timeout_s)
        self.clock_ns = clock_ns
        self.ready = False
        #: rate limits, exchange cool-downs, key-permission verdicts, weight budgets
        self.safety = safety if safety is not None else ExchangeSafety(store=store, metrics=metrics)
        self.safety.know_accounts((a.name, a.cfg.exchange, a.cfg.base_url) for a in self.accounts.values())
        if self.policy_runtime.prices is not None:  # a ticker's 429/418 pauses its accounts too
            self.policy_runtime.prices.on_answer = self.safety.observe_url
        self._background: set[asyncio.Task[None]] = set()
        #: exchange clock offsets for window-based exchanges (proxy.guards.clock); set by the worker
        self.exchange_clock: ClockOffsets | None = None

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        ctx = _Ctx(
            request_id=uuid.uuid4().hex, method=scope["method"],
            path=raw_path.decode("latin-1")[:512], started=time.perf_counter(),
        )
        reply = await self._handle(ctx, scope, receive, raw_path)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        headers.append((b"x-proxy-request-id", ctx.request_id.encode()))
        if ctx.injected_coid is not None:
            headers.append((INJECTED_HEADER.encode(), ctx.injected_coid.encode()))
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    # ------------------------------------------------------------------ the pipeline

    async def _handle(self, ctx: _Ctx, scope: Scope, receive: Receive, raw_path: bytes) -> Reply:
        try:
            return await self._pipeline(ctx, scope, receive, raw_path)
        except Refusal as refusal:
            return await self._refuse(ctx, refusal)
        except ProxyError as exc:  # a failure of ours that is not a refusal: fail closed
            reason = f"the proxy cannot serve this now ({type(exc).__name__})"
            return await self._refuse(ctx, NotReady(reason))
        except Exception as exc:  # a bug: fail closed, say nothing more than the type
            log.error("internal error on %s: %s", ctx.request_id, type(exc).__name__, exc_info=False)
            self.metrics.inc("proxy_internal_errors_total", help="requests failed by a proxy bug")
            fate = "it may have reached the exchange" if ctx.sent else "nothing was sent"
            return await self._refuse(ctx, NotReady(f"internal error ({type(exc).__name__}); {fate}"))

    async def _pipeline(self, ctx: _Ctx, scope: Scope, receive: Receive, raw_path: bytes) -> Reply:
        if not self.ready:
            raise NotReady("the proxy is starting or its secrets are unavailable; retry shortly")
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        now_ns = self.clock_ns()
        ctx.client = self.verifier.client_for(
            [v for k, v in headers if k == "proxy-authorization"], now_ns // 1_000_000_000
        )
        account_name, exchange_path = _split_target(raw_path)
        account = self.accounts.get(account_name) if account_name else None
        if account is None:
            raise Forbidden("no such account, or not granted to this client")
        ctx.account, ctx.exchange, ctx.path = account.name, account.cfg.exchange, exchange_path[:512]
        body = await _read_body(receive, headers, self.max_body)
        inbound = Inbound(
            method=ctx.method, raw_path=exchange_path, raw_query=scope.get("query_string", b""),
            headers=tuple(headers), body=body,
        )
        # One policy set for the whole request, so a reload never serves half of each.
        policies = self.policies
        ctx.extra["policy_version"] = policies.version
        # An ungranted account must look exactly like an unknown one, even for bad requests.
        policy = policies.for_client(ctx.client)
        grant = policy.grant_for(account.name) if policy is not None else None
        if policy is None or grant is None:
            raise Forbidden("no such account, or not granted to this client")
        await self.safety.admit_client(ctx.client, account.name, policy, grant)
        prepared = account.exchange.prepare(inbound)
        # A single order without a client order id gets one before policy and audit see it.
        prepared, ctx.injected_coid = inject(account.exchange, prepared, ctx.client, uuid.uuid4().hex)
        if ctx.injected_coid is not None:
            ctx.extra["client_order_id_injected"] = True
        ctx.prepared, ctx.category = prepared, str(prepared.category)
        await self.safety.check_pause(account.name)
        context = await self.policy_runtime.context(
            policies, ctx.client, account.name, prepared, exchange=account.exchange,
            base_url=account.cfg.base_url,
        )
        decision = evaluate(policies, ctx.client, account.name, prepared, context)
        if not decision.allowed:
            raise policy_refusal(decision)
        creds = account.creds
        if creds is None:
            raise NotReady(f"the secret for account {account.name} is not loaded"
                           + (f": {account.error}" if account.error else ""))
        ctx.key_version = creds.version
        self.safety.check_key(account.name, creds.version)
        if is_batch_placement(prepared) and self.store is not None:
            return await self._once_batch(ctx, account, prepared, creds, decision)
        coid = prepared.client_order_id
        if prepared.endpoint.action is Action.PLACE and coid and self.store is not None:
            return await self._once(ctx, account, prepared, creds, decision, coid)
        decision = await self._charge(ctx, decision)
        return await self._stamp_and_send(ctx, account, prepared, creds, decision.rule)

    async def _charge(self, ctx: _Ctx, decision: Decision) -> Decision:
        """Spend the decision's budgets, only once this request is going to be sent (an
        idempotent replay or a conflict spends nothing); over budget refuses."""
        decision = await self.policy_runtime.charge(decision)
        if not decision.allowed:
            raise policy_refusal(decision)
        if decision.would_deny is not None:
            ctx.extra["would_deny"] = decision.would_deny.rule
            log_would_deny(ctx.request_id, ctx.client or "", ctx.account or "", decision)
        return decision

    async def _once(
        self, ctx: _Ctx, account: Account, prepared: Prepared, creds: Credentials, decision: Decision,
        coid: str,
    ) -> Reply:
        """Place an order at most once per (client, account, client order id): a repeat with the
        same content replays the first answer, a concurrent one waits for it, a different
        content is a conflict. When the first answer was lost (timeout, crash), a retry asks
        the exchange for the order by its id first (proxy/pipeline/lookup.py)."""
        assert self.store is not None and ctx.client is not None
        base = IdempotencyScope(ctx.client, account.name, coid)
        digest = content_digest(prepared)
        lookups = account.exchange if isinstance(account.exchange, LooksUpOrders) else None
        for n in range(MAX_LOOKUP_ROUNDS + 1):
            scope = round_scope(base, n)
            result = await self.store.begin(scope, digest, self.idempotency_ttl_s, lease_s=self.lease_s)
            if isinstance(result, InFlight):
                result = await self.store.wait(
                    scope, IDEMPOTENCY_WAIT_S, content_hash=digest, ttl_s=self.idempotency_ttl_s,
                    lease_s=self.lease_s,
                )
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
                ctx.extra["idempotent_replay"] = True
                await self._audit(ctx, "allow", "idempotency.replay", phase="decision")
                self._log(ctx, "allow", "idempotency.replay", result.response.status, None)
                stored = result.response
                headers = (*stored.headers, ("x-proxy-idempotent-replay", "true"))
                return Reply(stored.status, headers, stored.body)
            if n == 0 and not result.previous_unknown:
                return await self._place(ctx, account, prepared, creds, decision, scope, result.token,
                                         mark_unknown=lookups is not None)
            if lookups is None:
                # An earlier attempt died without an answer: it may have been placed. Never guess.
                refusal = UpstreamError(
                    f"an earlier attempt with client order id {coid!r} ended without an answer; query "
                    "the order by that id and, if it is absent, place it again with a new id",
                    rule="idempotency.unknown_outcome",
                )
                await self.store.complete(scope, self._stored(ctx, refusal), token=result.token,
                                          ttl_s=self.idempotency_ttl_s)
                raise refusal
            return await self._look_up_then_place(ctx, account, prepared, creds, decision, lookups,
                                                  scope, result.token, first=n == 0)
        raise UpstreamError(
            f"the outcome of client order id {coid!r} stayed unknown after {MAX_LOOKUP_ROUNDS} "
            "lookups; query the order by that id yourself", rule="idempotency.unknown_outcome",
        )

    async def _once_batch(
        self, ctx: _Ctx, account: Account, prepared: Prepared, creds: Credentials, decision: Decision,
    ) -> Reply:
        """Place a batch at most once (README "Client order ids", batches): its record is its
        sorted set of ids; an identical retry replays, the same ids with other content are a
        conflict. Each id is also claimed on its own, so no id is reused by a single order or
        another batch. A lost answer is kept as the batch's answer (no lookup for batches)."""
        assert self.store is not None and ctx.client is not None
        ids = batch_ids(prepared)
        ctx.extra["client_order_ids"] = list(ids)  # the audit record's client_order_id is per order
        scope, digest = batch_scope(ctx.client, account.name, ids), content_digest(prepared)
        ttl = self.idempotency_ttl_s
        result = await self.store.begin(scope, digest, ttl, lease_s=self.lease_s)
        if isinstance(result, InFlight):
            result = await self.store.wait(scope, IDEMPOTENCY_WAIT_S, content_hash=digest, ttl_s=ttl,
                                           lease_s=self.lease_s)
        if isinstance(result, InFlight):
            raise NotReady("a batch with these client order ids is still in flight; retry shortly")
        if isinstance(result, Conflict):
            raise IdempotencyConflict("these client order ids were already used for a different "
                                      "batch; use new ids", rule="idempotency")
        if isinstance(result, Replay):
            ctx.extra["idempotent_replay"] = True
            await self._audit(ctx, "allow", "idempotency.replay", phase="decision")
            self._log(ctx, "allow", "idempotency.replay", result.response.status, None)
            stored = result.response
            return Reply(stored.status, (*stored.headers, ("x-proxy-idempotent-replay", "true")), stored.body)
        if result.previous_unknown:  # an earlier attempt died mid-flight: it may have been placed
            refusal = UpstreamError("an earlier attempt of this batch ended without an answer; query "
                                    "its orders by id", rule="idempotency.unknown_outcome")
            await self.store.complete(scope, self._stored(ctx, refusal), token=result.token, ttl_s=ttl)
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
            used = self._stored(ctx, IdempotencyConflict("this client order id was used in a batch",
                                                         rule="idempotency"))
            # refused unexecuted (429, 418): the ids stay free for the retry, as the batch does
            executed = ctx.sent and not (reply is not None and reply.status in NOT_EXECUTED_STATUSES)
            for one, token in claimed:
                if executed:
                    await self.store.complete(one, used, token=token, ttl_s=ttl)
                else:
                    await self.store.abandon(one, token=token)

    async def _place(
        self, ctx: _Ctx, account: Account, prepared: Prepared, creds: Credentials, decision: Decision,
        scope: IdempotencyScope, token: str, *, mark_unknown: bool,
    ) -> Reply:
        """Send the order as the owner of ``scope`` and remember the answer."""
        assert self.store is not None
        try:
            decision = await self._charge(ctx, decision)  # over budget: abandoned below, not sent
            reply = await self._stamp_and_send(ctx, account, prepared, creds, decision.rule)
        except (UpstreamTimeout, UpstreamError) as refusal:
            if ctx.sent:  # the exchange may have acted: a retry must not simply place it again
                await self.store.complete(scope, self._stored(ctx, refusal, unknown=mark_unknown),
                                          token=token, ttl_s=self.idempotency_ttl_s)
            else:
                await self.store.abandon(scope, token=token)
            raise
        except BaseException:
            if not ctx.sent:
                await self.store.abandon(scope, token=token)
            raise
        if reply.status in NOT_EXECUTED_STATUSES:
            # Rate limited or banned: the exchange did not act, so a retry after the cool-down
            # may place the order (replaying the 429 for a day would block the bot's retries).
            await self.store.abandon(scope, token=token)
            return reply
        # A 5xx leaves the execution status unknown (Binance says so): where the exchange can be
        # asked, the next retry looks the order up instead of replaying the 5xx.
        unknown = mark_unknown and reply.status >= 500
        headers = (*reply.headers, UNKNOWN_OUTCOME) if unknown else reply.headers
        await self.store.complete(
            scope, StoredResponse(reply.status, headers, reply.body), token=token,
            ttl_s=self.idempotency_ttl_s,
        )
        return reply

    async def _look_up_then_place(
        self, ctx: _Ctx, account: Account, prepared: Prepared, creds: Credentials, decision: Decision,
        lookups: LooksUpOrders, scope: IdempotencyScope, token: str, *, first: bool,
    ) -> Reply:
        """An earlier attempt's outcome is unknown: ask the exchange by client order id.
        Found: its answer stands for the placement. Absent: place it now. Unknown: say so;
        the next retry asks again."""
        assert self.store is not None
        ctx.extra["order_lookup"] = "unknown"
        failure: Refusal | None = None
        found: Reply | None = None
        try:
            for lookup in lookups.order_lookups(prepared):
                child = _Ctx(
                    request_id=ctx.request_id, method=lookup.method, path=lookup.path,
                    started=ctx.started, client=ctx.client, account=ctx.account,
                    exchange=ctx.exchange, category=str(lookup.category), prepared=lookup,
                    key_version=ctx.key_version,
                    extra={"order_lookup_for": prepared.client_order_id},
                )
                answer = await self._stamp_and_send(child, account, lookup, creds, "idempotency.lookup")
                outcome, shown = judge(lookups, prepared, answer.status, answer.body)
                if outcome is not Lookup.ABSENT:
                    ctx.extra["order_lookup"] = str(outcome)
                    found = Reply(answer.status, answer.headers, shown) if outcome is Lookup.FOUND else None
                    break
            else:
                ctx.extra["order_lookup"] = str(Lookup.ABSENT)
        except (UpstreamTimeout, UpstreamError) as exc:
            failure = exc
        except BaseException:
            await self._release_unknown(ctx, scope, token, first, None)
            raise
        if ctx.extra["order_lookup"] == Lookup.ABSENT:
            return await self._place(ctx, account, prepared, creds, decision, scope, token,
                                     mark_unknown=True)
        if found is not None:
            reply = Reply(found.status, found_headers(found.headers), found.body)
            await self.store.complete(scope, StoredResponse(reply.status, reply.headers, reply.body),
                                      token=token, ttl_s=self.idempotency_ttl_s)
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
        self, ctx: _Ctx, scope: IdempotencyScope, token: str, first: bool, refusal: Refusal | None
    ) -> None:
        """The outcome is still unknown: a round record is simply released (the next retry
        claims it again); the placement's own record keeps the unknown mark."""
        assert self.store is not None
        if not first:
            await self.store.abandon(scope, token=token)
            return
        refusal = refusal or UpstreamError("the order's outcome is unknown", rule="idempotency.lookup_failed")
        await self.store.complete(scope, self._stored(ctx, refusal, unknown=True), token=token,
                                  ttl_s=self.idempotency_ttl_s)

    def _stored(self, ctx: _Ctx, refusal: Refusal, *, unknown: bool = False) -> StoredResponse:
        reply = self._error_reply(ctx, refusal)
        headers = (*reply.headers, UNKNOWN_OUTCOME) if unknown else reply.headers
        return StoredResponse(reply.status, headers, reply.body)

    async def _stamp_and_send(
        self, ctx: _Ctx, account: Account, prepared: Prepared, creds: Credentials, rule: str
    ) -> Reply:
        if account.pool is not None:  # a key pool: the key with the fewest requests in flight here
            def refusal(path: str, key: Credentials) -> NotReady | None:  # never a refused key
                return self.safety.key_refusal(account.name, key.version, path)

            with account.pool.lease(refusal) as (index, leased):
                ctx.key_version = leased.version
                ctx.extra["key_index"] = index
                return await self._stamp_and_send_with(ctx, account, prepared, leased, rule)
        return await self._stamp_and_send_with(ctx, account, prepared, creds, rule)

    async def _stamp_and_send_with(
        self, ctx: _Ctx, account: Account, prepared: Prepared, creds: Credentials, rule: str
    ) -> Reply:
        unit = account.exchange.nonce_unit
        if unit is None:
            now_ms = self.clock_ns() // 1_000_000
            if self.exchange_clock is not None:  # sign with the exchange's clock, not the host's
                now_ms += self.exchange_clock.offset_ms(account.name)
            stamp = Stamp(now_ms=now_ms, nonce=now_ms, unique=str(uuid.uuid4()))
            return await self._send(ctx, account, prepared, creds, stamp, rule)
        if self.store is None:
            raise NotReady("no state store is configured for this exchange's nonces")
        # Strictly increasing nonces must also arrive in order: hold the key from allocation
        # until the exchange has answered (across workers and, with Redis, hosts).
        key_id = f"{account.cfg.exchange}:{creds.api_key}"
        async with self.store.key_lock(key_id, NONCE_LOCK_TIMEOUT_S):
            nonce = await self.store.next_nonce(key_id, unit, now_us=self.clock_ns() // 1000)
            stamp = Stamp(now_ms=self.clock_ns() // 1_000_000, nonce=nonce, unique=str(uuid.uuid4()))
            return await self._send(ctx, account, prepared, creds, stamp, rule)

    async def _send(
        self, ctx: _Ctx, account: Account, prepared: Prepared, creds: Credentials, stamp: Stamp,
        rule: str,
    ) -> Reply:
        await self.safety.spend_weight(account.name, account.cfg.exchange, account.cfg.weight_per_minute,
                                       prepared)
        ctx.stamp = stamp
        if creds.key.remote:  # Vault Transit signs over the network: keep the event loop free
            outbound = await asyncio.to_thread(account.exchange.sign, prepared, creds, stamp, account.host)
        else:
            outbound = account.exchange.sign(prepared, creds, stamp, account.host)
        await self._audit(ctx, "allow", rule, phase="decision")
        ctx.sent = True
        try:
            response = await self.upstream.send(account.cfg.base_url, outbound)
        except UpstreamTimeout:
            self.safety.upstream_error(account.name, "timeout")
            raise
        except UpstreamError:
            self.safety.upstream_error(account.name, "unreachable")
            raise
        await self.safety.observe(account.name, account.cfg.exchange, response.status, response.headers,
                                  response.body)
        await self._outcome(ctx, response)
        return Reply(response.status, response.headers, response.body)

    # ------------------------------------------------------------------ audit, log, reply

    def _record(self, ctx: _Ctx, decision: str, rule: str, phase: str) -> dict[str, Any]:
        prepared = ctx.prepared
        intents = prepared.intents if prepared else ()
        record: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "phase": phase, "request_id": ctx.request_id, "client": ctx.client,
            "account": ctx.account, "exchange": ctx.exchange, "method": ctx.method,
            "path": prepared.path if prepared else ctx.path, "category": ctx.category,
            "decision": decision, "rule": rule,
            "client_order_id": prepared.client_order_id if prepared else None,
            "upstream_status": None, "key_version": ctx.key_version,
            "policy_version": self.policies.version,
        }
        if intents:
            record["intent"] = _intent_fields(intents[0])
            if len(intents) > 1:
                record["intents"] = [_intent_fields(i) for i in intents]
        if ctx.stamp is not None:
            record["nonce"] = ctx.stamp.nonce  # the nonce, or the timestamp, that was signed
        record.update(ctx.extra)
        return record

    async def _audit(self, ctx: _Ctx, decision: str, rule: str, phase: str) -> None:
        try:
            await self.audit.write(self._record(ctx, decision, rule, phase))
        except NotReady:
            raise
        except Exception as exc:  # any failure to make the record durable: fail closed
            reason = f"the audit trail is not writable ({type(exc).__name__}); nothing was sent"
            raise NotReady(reason) from None

    async def _outcome(self, ctx: _Ctx, response: UpstreamResponse) -> None:
        """Queue the outcome record without waiting for its fsync: the decision record was
        durable before anything was sent, and the outcome rides the next group commit, so the
        bot does not pay a second fsync."""
        ctx.extra.update({
            "upstream_status": response.status, "upstream_latency_ms": round(response.latency_ms, 3),
        })
        if ctx.prepared is not None and ctx.prepared.category is Category.TRADE and response.status < 300:
            order_id = exchange_order_id(response.body)
            if order_id is not None:
                ctx.extra["exchange_order_id"] = order_id
        task = asyncio.create_task(self._write_outcome(self._record(ctx, "allow", "grant", "outcome")))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        self._log(ctx, "allow", "grant", response.status, response.status)

    async def _write_outcome(self, record: dict[str, Any]) -> None:
        try:
            await self.audit.write(record)
        except Exception:  # the request was sent; the outcome is lost, the decision is not
            log.error("audit outcome record not written for %s", record.get("request_id"))
            self.metrics.inc("proxy_audit_errors_total", help="audit records that could not be written")

    async def drain(self) -> None:
        """Wait for queued outcome records (at shutdown, before the audit writer closes)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _refuse(self, ctx: _Ctx, refusal: Refusal) -> Reply:
        rule = refusal.rule or refusal.code
        ctx.extra["error"] = refusal.code
        # Once sent, the request was allowed and its decision record is written: the failure
        # (timeout, unreachable, garbage) is its outcome, not a second decision.
        decision, phase = ("allow", "outcome") if ctx.sent else ("deny", "decision")
        if refusal.code not in ("not_ready",) or ctx.client is not None:
            try:
                await self.audit.write(self._record(ctx, decision, rule, phase))
            except Exception:
                log.error("audit record not written for refused request %s", ctx.request_id)
                self.metrics.inc("proxy_audit_errors_total", help="audit records that could not be written")
        self._log(ctx, decision, rule, refusal.status, None)
        return self._error_reply(ctx, refusal)

    def _error_reply(self, ctx: _Ctx, refusal: Refusal) -> Reply:
        error: dict[str, Any] = {
            "code": refusal.code, "message": refusal.message, "request_id": ctx.request_id,
        }
        if refusal.rule:
            error["rule"] = refusal.rule
        headers: list[tuple[str, str]] = [
            ("content-type", "application/json"), ("x-proxy-error", refusal.code),
        ]
        retry_after = getattr(refusal, "retry_after", None)  # RateLimited; AccountPaused (cool-down)
        if retry_after is not None:
            headers.append(("retry-after", str(retry_after)))
        if isinstance(refusal, Unauthenticated):
            headers.append(("proxy-authenticate", 'Bearer realm="signing-proxy"'))
        return Reply(refusal.status, tuple(headers), json.dumps({"error": error}).encode())

    def _log(self, ctx: _Ctx, decision: str, rule: str, status: int, upstream: int | None) -> None:
        elapsed = (time.perf_counter() - ctx.started) * 1000
        labels = (("account", ctx.account or ""), ("decision", decision), ("status", str(status)))
        self.metrics.inc("proxy_requests_total", (("client", ctx.client or ""), *labels),
                         help="bot requests by client, account, decision and status")
        self.metrics.observe_ms("proxy_request_duration_seconds", (("account", ctx.account or ""),),
                                elapsed, help="time in the proxy including the exchange")
        if log.isEnabledFor(logging.INFO):
            log.info(json.dumps({
                "request_id": ctx.request_id, "client": ctx.client, "account": ctx.account,
                "method": ctx.method, "path": ctx.prepared.path if ctx.prepared else ctx.path[:200],
                "category": ctx.category, "decision": decision, "rule": rule, "status": status,
                "upstream_status": upstream, "ms": round(elapsed, 3),
            }))


def owner_lease_s(upstream_timeout_s: float, vault_timeout_s: float) -> float:
    """The idempotency lease: long enough that a live owner never loses its client order id.
    One attempt may wait for the nonce lock, for a Transit signature and for the exchange; a
    retry after a lost answer makes up to three such sends (two lookups, then the placement)."""
    return 3 * (NONCE_LOCK_TIMEOUT_S + vault_timeout_s + upstream_timeout_s) + 10.0


def _intent_fields(intent: Intent) -> dict[str, Any]:
    notional = intent.notional
    return {
        k: (str(v) if v is not None and not isinstance(v, str) else v)
        for k, v in {
            "symbol": intent.symbol, "side": intent.side, "type": intent.order_type,
            "quantity": intent.quantity, "quote_quantity": intent.quote_quantity,
            "price": intent.price, "notional": notional, "client_order_id": intent.client_order_id,
        }.items()
        if v is not None
    }


_ORDER_ID_KEYS = ("orderId", "ordId", "order_id", "txid", "id")


def exchange_order_id(body: bytes) -> str | None:
    """Best effort: the exchange's order id from a placement answer, for the audit record.
    Looks for the usual id fields in the top three levels of a JSON answer."""
    if len(body) > 64 * 1024:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    level: list[Any] = [data]
    for _ in range(3):
        nxt: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                for key in _ORDER_ID_KEYS:
                    value = node.get(key)
                    if isinstance(value, str | int) and not isinstance(value, bool):
                        return str(value)
                    if isinstance(value, list) and value and isinstance(value[0], str | int):
                        return str(value[0])
                nxt.extend(node.values())
            elif isinstance(node, list):
                nxt.extend(node[:4])
        level = nxt
    return None


def _split_target(raw_path: bytes) -> tuple[str | None, str]:
    """``/x/{account}/{exchange path}`` -> (account, exchange path). The exchange path is kept
    raw (percent-encoding intact) for the exchange module's checks."""
    if not raw_path.startswith(b"/x/"):
        return None, ""
    account, sep, rest = raw_path[3:].partition(b"/")
    if not sep or not _ACCOUNT.fullmatch(account):
        return None, ""
    return account.decode(), "/" + rest.decode("latin-1")


async def _read_body(receive: Receive, headers: list[tuple[str, str]], limit: int) -> bytes:
    declared = [v for k, v in headers if k == "content-length"]
    if declared:
        if len(declared) > 1 or not declared[0].isdigit():
            raise BadRequest("send exactly one Content-Length, as a plain number")
        if int(declared[0]) > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
