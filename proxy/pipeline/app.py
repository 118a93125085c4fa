"""The request pipeline for bots, as a bare ASGI app: the way one request goes.

authenticate -> resolve account -> prepare (parse, canonicalise, classify) -> policy ->
[once: idempotency] -> send (stamp, sign, durable decision record, forward, queued outcome) ->
respond.

Every refusal is a contract error with ``X-Proxy-Error``, an audit record and one decision log
line; nothing is forwarded unless the decision record is durable first. A bare ASGI app (not a
router) keeps the hot path short and gives direct access to the raw path bytes, which path
tricks hide in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from proxy.errors import BadRequest, Forbidden, NotReady, ProxyError, RateLimited, Refusal, Unauthenticated
from proxy.guards.hooks import ExchangeSafety
from proxy.guards.instruments import Instruments
from proxy.guards.key_fallback import KeyFallbacks
from proxy.guards.prices import ReferencePrices
from proxy.guards.unauthenticated import UnauthenticatedRefusals
from proxy.model.request import Action, Category, Endpoint, Inbound, Outbound, Prepared
from proxy.ops.metrics import Metrics
from proxy.pipeline.accounts import Account
from proxy.pipeline.auth import TokenVerifier
from proxy.pipeline.decision import AuditSink, Decisions, RequestContext, answering, error_reply
from proxy.pipeline.http import Receive, Reply, Scope, Send, lifespan, read_body, split_target
from proxy.pipeline.ids import random_hex
from proxy.pipeline.lookup import INJECTED_HEADER, inject, is_batch_placement
from proxy.pipeline.once import Once
from proxy.pipeline.send import NONCE_LOCK_TIMEOUT_S, ClockOffsets, Sender
from proxy.pipeline.stream import StreamRelay
from proxy.policy.evaluate import Decision, evaluate
from proxy.policy.model import PolicySet
from proxy.policy.runtime import PolicyRuntime, log_would_deny, with_instruments
from proxy.policy.runtime import refusal as policy_refusal
from proxy.state import StateStore
from proxy.state.group_commit import GroupCommit
from proxy.upstream import Upstream

log = logging.getLogger("proxy.decision")


class Pipeline:
    """The bot-facing ASGI application of one worker."""

    def __init__(
        self, *, accounts: Mapping[str, Account], policies: PolicySet, verifier: TokenVerifier,
        upstream: Upstream, audit: AuditSink, metrics: Metrics, max_body_bytes: int,
        store: StateStore | None = None, idempotency_ttl_s: int = 24 * 3600,
        clock_ns: Callable[[], int] = time.time_ns, reference_prices: ReferencePrices | None = None,
        upstream_timeout_s: float = 10.0, vault_timeout_s: float = 5.0,
        safety: ExchangeSafety | None = None, commit: GroupCommit | None = None,
    ) -> None:
        self.accounts = dict(accounts)
        #: swapped whole on reload (one assignment); each request reads it once
        self.policies = policies
        self.policy_runtime = PolicyRuntime(store, reference_prices or ReferencePrices(upstream, store=store),
                                            instruments=Instruments(upstream))
        self.verifier = verifier
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.store = store
        self.clock_ns = clock_ns
        self.ready = False
        #: rate limits, exchange cool-downs, key-permission verdicts, weight budgets
        self.safety = safety if safety is not None else ExchangeSafety(store=store, metrics=metrics)
        self.safety.know_accounts((a.name, a.cfg.exchange, a.cfg.base_url) for a in self.accounts.values())
        if self.policy_runtime.prices is not None:  # a ticker's 429/418 pauses its accounts too
            self.policy_runtime.prices.on_answer = self.safety.observe_url
        if self.policy_runtime.instruments is not None:  # charged and observed like any call
            self.policy_runtime.instruments.on_answer = self.safety.observe_url
            self.policy_runtime.instruments.charge = self._charge_own_call
        self.decisions = Decisions(audit, metrics, lambda: self.policies.version)
        #: refusals without a valid token: rate limited and audited in aggregate (set by the worker)
        self.unauthenticated: UnauthenticatedRefusals | None = None
        #: the worker's durability owner (proxy.state.group_commit); None: one step at a time
        self.decisions.commit = commit
        self.sender = Sender(upstream=upstream, store=store, safety=self.safety, decisions=self.decisions,
                             clock_ns=clock_ns)
        self.streams = StreamRelay(
            accounts=self.accounts, policies=lambda: self.policies, verifier=verifier,
            decisions=self.decisions, upstream=upstream, sender=self.sender, ready=lambda: self.ready,
            clock_ns=clock_ns,
        )
        #: how long a client order id stays claimed by a live request before it is presumed dead
        self.once = None if store is None else Once(
            store=store, decisions=self.decisions, charge=self._charge, send=self.sender.stamp_and_send,
            ttl_s=idempotency_ttl_s, lease_s=owner_lease_s(upstream_timeout_s, vault_timeout_s),
            commit=commit, sender=self.sender,
        )

    async def _charge_own_call(self, account_name: str, exchange: str, out: Outbound) -> None:
        """A public call the proxy makes for a request (an instrument) spends that account's
        weight budget like the bot's own calls."""
        account = self.accounts.get(account_name)
        if account is None:
            return
        path, _, query = out.path_and_query.partition("?")
        own = Prepared(method=out.method, path=path, query=query, body=out.body, content_type=None,
                       endpoint=Endpoint(out.method, path, Category.PUBLIC, Action.PUBLIC))
        await self.safety.spend_weight(account_name, exchange, account.cfg.weight_per_minute, own)

    @property
    def fallbacks(self) -> KeyFallbacks | None:
        """The previous key version while the exchange refuses the newest; set by the worker."""
        return self.sender.fallbacks

    @fallbacks.setter
    def fallbacks(self, fallbacks: KeyFallbacks | None) -> None:
        self.sender.fallbacks = fallbacks

    @property
    def exchange_clock(self) -> ClockOffsets | None:
        """Exchange clock offsets for window-based exchanges; set by the worker."""
        return self.sender.exchange_clock

    @exchange_clock.setter
    def exchange_clock(self, clock: ClockOffsets | None) -> None:
        self.sender.exchange_clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await self.streams(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        ctx = RequestContext(
            request_id=random_hex(), method=scope["method"],
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

    async def drain(self) -> None:
        """Wait for queued outcome records (at shutdown, before the audit writer closes)."""
        await self.decisions.drain()

    async def _handle(self, ctx: RequestContext, scope: Scope, receive: Receive, raw_path: bytes) -> Reply:
        try:
            return await self._pipeline(ctx, scope, receive, raw_path)
        except Unauthenticated as refusal:
            if self.unauthenticated is None or ctx.client is not None:
                return await self.decisions.refused(ctx, refusal)
            return self._refuse_unauthenticated(ctx, scope, refusal)
        except Refusal as refusal:
            return await self.decisions.refused(ctx, refusal)
        except ProxyError as exc:  # a failure of ours that is not a refusal: fail closed
            reason = f"the proxy cannot serve this now ({type(exc).__name__})"
            return await self.decisions.refused(ctx, NotReady(reason))
        except Exception as exc:  # a bug: fail closed, say nothing more than the type
            log.error("internal error on %s: %s", ctx.request_id, type(exc).__name__, exc_info=False)
            self.metrics.inc("proxy_internal_errors_total", help="requests failed by a proxy bug")
            fate = "it may have reached the exchange" if ctx.sent else "nothing was sent"
            failure = NotReady(f"internal error ({type(exc).__name__}); {fate}")
            return await self.decisions.refused(ctx, failure)

    def _refuse_unauthenticated(self, ctx: RequestContext, scope: Scope, refusal: Refusal) -> Reply:
        """No per-request audit record or log line (issue 14): the source's refusals are
        counted into one aggregate record per interval, and beyond its rate it gets 429."""
        assert self.unauthenticated is not None
        client = scope.get("client")
        source = str(client[0]) if client else ""
        if not self.unauthenticated.admit(source):
            refusal = RateLimited("too many requests without a valid token from this address; slow down",
                                  retry_after=self.unauthenticated.retry_after(), rule="unauthenticated")
        self.metrics.inc("proxy_requests_total", (("client", ""), ("account", ""), ("decision", "deny"),
                                                  ("status", str(refusal.status))),
                         help="bot requests by client, account, decision and status")
        return error_reply(ctx.request_id, refusal, answering(ctx))

    async def _pipeline(self, ctx: RequestContext, scope: Scope, receive: Receive, raw_path: bytes) -> Reply:
        if not self.ready:
            raise NotReady("the proxy is starting or its secrets are unavailable; retry shortly")
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        now_ns = self.clock_ns()
        ctx.client = self.verifier.client_for(
            [v for k, v in headers if k == "proxy-authorization"], now_ns // 1_000_000_000
        )
        # The body is read before the account is looked up, so an unknown account and one
        # this client holds no grant on take the same path and the same time (issue 14).
        body = await read_body(receive, headers, self.max_body)
        account_name, exchange_path = split_target(raw_path)
        account = self.accounts.get(account_name) if account_name else None
        if account is None:
            raise Forbidden("no such account, or not granted to this client")
        ctx.account, ctx.exchange, ctx.path = account.name, account.cfg.exchange, exchange_path[:512]
        inbound = Inbound(
            method=ctx.method, raw_path=exchange_path, raw_query=scope.get("query_string", b""),
            headers=tuple(headers), body=body,
        )
        # One policy set for the whole request, so a reload never serves half of each.
        policies = self.policies
        ctx.policy_version = policies.version
        if ctx.client in policies.held:  # its file was edited and does not load: nothing is in force
            raise NotReady(f"the policy of client {ctx.client} does not load; every request is refused "
                           "until an operator fixes it (python -m proxy policy check)", rule="policy_invalid")
        # An ungranted account must look exactly like an unknown one, even for bad requests.
        policy = policies.for_client(ctx.client)
        grant = policy.grant_for(account.name) if policy is not None else None
        if policy is None or grant is None:
            raise Forbidden("no such account, or not granted to this client")
        ctx.answer_as = account.exchange  # from here on, refusals take the account's format
        await self.safety.admit_client(ctx.client, account.name, policy, grant)
        prepared = _contract_only(account.exchange.prepare, inbound, self.metrics)
        # A single order without a client order id gets one before policy and audit see it.
        prepared, ctx.injected_coid = inject(account.exchange, prepared, ctx.client, random_hex())
        ctx.client_order_id_injected = ctx.injected_coid is not None
        ctx.prepared, ctx.category = prepared, str(prepared.category)
        await self.safety.check_pause(account.name)
        context = await self.policy_runtime.context(
            policies, ctx.client, account.name, prepared, exchange=account.exchange,
            base_url=account.cfg.base_url, spend=self.safety.spender(account.name, account.cfg.exchange,
                                                                    account.cfg.weight_per_minute),
        )
        # the instruments read for the decision size the audit record's notional too
        prepared = ctx.prepared = with_instruments(prepared, context.instruments)
        decision = evaluate(policies, ctx.client, account.name, prepared, context)
        if not decision.allowed:
            raise policy_refusal(decision)
        if prepared.endpoint.action is Action.STREAM_TOKEN:  # never sent: a placeholder
            return await self.streams.placeholder_token(ctx, account)
        creds = account.creds if self.fallbacks is None else self.fallbacks.signing(account)
        if creds is None:
            raise NotReady(f"the secret for account {account.name} is not loaded"
                           + (f": {account.error}" if account.error else ""))
        ctx.key_version = creds.version
        self.safety.check_key(account.name, creds.version)
        if self.once is not None:
            if is_batch_placement(prepared):
                return await self.once.batch(ctx, account, prepared, creds, decision)
            coid = prepared.client_order_id
            if prepared.endpoint.action is Action.PLACE and coid:
                return await self.once.single(ctx, account, prepared, creds, decision, coid)
        decision = await self._charge(ctx, decision)
        return await self.sender.stamp_and_send(ctx, account, prepared, creds, decision.rule)

    async def _charge(self, ctx: RequestContext, decision: Decision) -> Decision:
        """Spend the decision's budgets, only once this request is going to be sent (an
        idempotent replay or a conflict spends nothing); over budget refuses."""
        decision = await self.policy_runtime.charge(decision)
        if not decision.allowed:
            raise policy_refusal(decision)
        if decision.would_deny is not None:
            ctx.would_deny = decision.would_deny.rule
            log_would_deny(ctx.request_id, ctx.client or "", ctx.account or "", decision)
        return decision


def _contract_only(prepare: Callable[[Inbound], Prepared], inbound: Inbound, metrics: Metrics) -> Prepared:
    """``prepare`` raises only contract errors (the fuzz tests hold every exchange to that);
    should one still raise anything else, the request was malformed in a way nobody foresaw:
    it is a 400, nothing was sent, and a metric and a warning say which exception."""
    try:
        return prepare(inbound)
    except Refusal:
        raise
    except (ValueError, ArithmeticError, LookupError, TypeError, RecursionError) as exc:
        log.warning("prepare raised %s on a malformed request; answered bad_request", type(exc).__name__)
        metrics.inc("proxy_unforeseen_bad_requests_total", (("error", type(exc).__name__),),
                    help="malformed requests an exchange module did not refuse itself")
        raise BadRequest("the request could not be parsed; check its parameters and body") from None


def owner_lease_s(upstream_timeout_s: float, vault_timeout_s: float) -> float:
    """The idempotency lease: long enough that a live owner never loses its client order id.
    One attempt may wait for the nonce lock, for a Transit signature and for the exchange; a
    retry after a lost answer makes up to three such sends (two lookups, then the placement)."""
    return 3 * (NONCE_LOCK_TIMEOUT_S + vault_timeout_s + upstream_timeout_s) + 10.0
