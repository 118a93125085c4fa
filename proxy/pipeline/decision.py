"""What one request decided, said once: the typed context, its audit record, the one decision
log line, and the error answer a bot gets (in its exchange's own format).

Every field an audit record can carry is a typed field of ``RequestContext``, so no stage can
overwrite another's field by accident; the record is built from it in one place.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from proxy import exchanges
from proxy.errors import AuditReserveReached, NotReady, Refusal, Unauthenticated
from proxy.exchanges import for_path
from proxy.exchanges.base import Exchange
from proxy.exchanges.refusals import RefusalView, contract_refusal
from proxy.model.request import Category, Intent, Prepared, Stamp
from proxy.ops.metrics import Metrics
from proxy.pipeline.http import Reply, split_target
from proxy.state.group_commit import GroupCommit
from proxy.upstream import UpstreamResponse

log = logging.getLogger("proxy.decision")


class AuditSink(Protocol):
    """Where decision and outcome records go; ``write`` returns once the record is durable."""

    async def write(self, record: Mapping[str, Any]) -> None: ...


@dataclass
class RequestContext:
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
    policy_version: str | None = None
    # Optional record fields: written only when set.
    client_order_id_injected: bool = False
    would_deny: str | None = None
    idempotent_replay: bool = False
    client_order_ids: tuple[str, ...] | None = None
    order_lookup: str | None = None
    order_lookup_for: str | None = None
    key_index: int | None = None
    upstream_status: int | None = None
    upstream_latency_ms: float | None = None
    exchange_order_id: str | None = None
    #: a batch placement: every order's id, in order
    exchange_order_ids: tuple[str, ...] | None = None
    error: str | None = None
    #: a private stream's subscription: the channels asked for
    channels: tuple[str, ...] | None = None
    #: why a private stream ended
    stream_close: str | None = None
    # Not recorded: whose error format a refusal takes (set once the client's grant is known),
    # and the rule of the allowed decision record, which its outcome record repeats.
    answer_as: Exchange | None = None
    decided_rule: str | None = None

    def lookup(self, prepared: Prepared) -> RequestContext:
        """The context of a lookup the proxy makes on this request's behalf (same request id)."""
        return replace(
            self, method=prepared.method, path=prepared.path, category=str(prepared.category),
            prepared=prepared, stamp=None, sent=False, injected_coid=None,
            client_order_id_injected=False, would_deny=None, idempotent_replay=False,
            client_order_ids=None, order_lookup=None, order_lookup_for=self.prepared_coid,
            key_index=None, upstream_status=None, upstream_latency_ms=None, exchange_order_id=None,
            exchange_order_ids=None, error=None, decided_rule=None,
        )

    @property
    def prepared_coid(self) -> str | None:
        return self.prepared.client_order_id if self.prepared else None


_OPTIONAL = ("client_order_id_injected", "would_deny", "idempotent_replay", "order_lookup",
             "order_lookup_for", "key_index", "upstream_latency_ms", "exchange_order_id",
             "exchange_order_ids", "error", "stream_close")


class Decisions:
    """Writes a request's audit records and its one decision log line."""

    def __init__(self, audit: AuditSink, metrics: Metrics, policy_version: Callable[[], str]) -> None:
        self.audit = audit
        self.metrics = metrics
        self._policy_version = policy_version
        self._background: set[asyncio.Task[None]] = set()
        #: the worker's group commit: outcome records ride its next batch (None: a task each)
        self.commit: GroupCommit | None = None

    def record(self, ctx: RequestContext, decision: str, rule: str, phase: str) -> dict[str, Any]:
        prepared = ctx.prepared
        intents = prepared.intents if prepared else ()
        record: dict[str, Any] = {
            "ts": utc_stamp(time.time_ns()),
            "phase": phase, "request_id": ctx.request_id, "client": ctx.client,
            "account": ctx.account, "exchange": ctx.exchange, "method": ctx.method,
            "path": prepared.path if prepared else ctx.path, "category": ctx.category,
            "decision": decision, "rule": rule,
            "client_order_id": prepared.client_order_id if prepared else None,
            "upstream_status": ctx.upstream_status, "key_version": ctx.key_version,
            "policy_version": ctx.policy_version or self._policy_version(),
        }
        if intents:
            record["intent"] = intent_fields(intents[0])
            if len(intents) > 1:
                record["intents"] = [intent_fields(i) for i in intents]
        if ctx.stamp is not None:
            record["nonce"] = ctx.stamp.nonce  # the nonce, or the timestamp, that was signed
        if ctx.channels is not None:
            record["channels"] = list(ctx.channels)
        if ctx.client_order_ids is not None:  # a batch: the record's client_order_id is per order
            record["client_order_ids"] = list(ctx.client_order_ids)
        for name in _OPTIONAL:
            value = getattr(ctx, name)
            if value is not None and value is not False:
                record[name] = value
        return record

    async def durable(self, ctx: RequestContext, decision: str, rule: str, phase: str) -> None:
        """Write a record and wait until it is durable; any failure fails closed."""
        if decision == "allow" and phase == "decision":
            ctx.decided_rule = rule
        try:
            await self.audit.write(self.record(ctx, decision, rule, phase))
        except NotReady:
            raise
        except Exception as exc:
            reason = f"the audit trail is not writable ({type(exc).__name__}); nothing was sent"
            raise NotReady(reason) from None

    def outcome(self, ctx: RequestContext, response: UpstreamResponse, rule: str) -> None:
        """Queue the outcome record without waiting for its fsync: the decision record was
        durable before anything was sent, and the outcome rides the next group commit, so the
        bot does not pay a second fsync. ``rule`` is the decision's: the outcome repeats it."""
        ctx.upstream_status = response.status
        ctx.upstream_latency_ms = round(response.latency_ms, 3)
        if ctx.prepared is not None and ctx.prepared.category is Category.TRADE and response.status < 300:
            batch = ctx.prepared.endpoint.batch
            ids = exchange_order_ids(ctx.exchange, response.body, batch=batch)
            ctx.exchange_order_id = ids[0] if ids else None
            ctx.exchange_order_ids = ids if batch and ids else None
        record = self.record(ctx, "allow", rule, "outcome")
        if self.commit is not None:
            self.commit.outcome(record)
        else:
            self.queue(record)
        self.log(ctx, "allow", rule, response.status, response.status)

    def queue(self, record: dict[str, Any]) -> None:
        """Write a record in the background (an outcome: the decision before it was durable)."""
        task = asyncio.create_task(self._write_outcome(record))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
        if self.commit is not None:
            await self.commit.drain()

    async def refused(self, ctx: RequestContext, refusal: Refusal) -> Reply:
        """Audit and log a refusal, and render it for the bot."""
        rule = refusal.rule or refusal.code
        ctx.error = refusal.code
        # Once sent, the request was allowed and its decision record is written: the failure
        # (timeout, unreachable, garbage) is its outcome, not a second decision, and carries the
        # decision's rule (the failure is in ``error``).
        decision, phase = ("allow", "outcome") if ctx.sent else ("deny", "decision")
        if ctx.sent and ctx.decided_rule is not None:
            rule = ctx.decided_rule
        if refusal.code not in ("not_ready",) or ctx.client is not None:
            try:
                await self.audit.write(self.record(ctx, decision, rule, phase))
            except AuditReserveReached:  # the disk is low: such records are given up, quietly
                self.metrics.inc("proxy_audit_dropped_total", (("reason", "reserve"),),
                                 help="audit records given up to keep the disk's reserve for orders")
            except Exception:
                log.error("audit record not written for refused request %s", ctx.request_id)
                self.metrics.inc("proxy_audit_errors_total", help="audit records that could not be written")
        self.log(ctx, decision, rule, refusal.status, None)
        return error_reply(ctx.request_id, refusal, answering(ctx))

    def log(self, ctx: RequestContext, decision: str, rule: str, status: int, upstream: int | None) -> None:
        """The one canonical decision line of a bot request (and the request metrics), with the
        rule that decided. A lookup the proxy makes for a lost answer gets a line of its own
        (``order_lookup_for``) but is not counted as a bot request."""
        elapsed = (time.perf_counter() - ctx.started) * 1000
        if ctx.order_lookup_for is None:
            labels = (("account", ctx.account or ""), ("decision", decision), ("status", str(status)))
            self.metrics.inc("proxy_requests_total", (("client", ctx.client or ""), *labels),
                             help="bot requests by client, account, decision and status")
            self.metrics.observe_ms("proxy_request_duration_seconds", (("account", ctx.account or ""),),
                                    elapsed, help="time in the proxy including the exchange")
        else:
            self.metrics.inc("proxy_order_lookups_total", (("account", ctx.account or ""),),
                             help="order lookups the proxy made after a lost answer")
        if log.isEnabledFor(logging.INFO):
            line: dict[str, Any] = {
                "request_id": ctx.request_id, "client": ctx.client, "account": ctx.account,
                "method": ctx.method, "path": ctx.prepared.path if ctx.prepared else ctx.path[:200],
                "category": ctx.category, "decision": decision, "rule": rule, "status": status,
                "upstream_status": upstream, "ms": round(elapsed, 3),
            }
            if ctx.error is not None:
                line["error"] = ctx.error
            if ctx.order_lookup_for is not None:
                line["order_lookup_for"] = ctx.order_lookup_for
            log.info("decision", extra={"fields": line})


def answering(ctx: RequestContext) -> Exchange | None:
    """Whose error format a refusal takes: the account's once the client's grant on it is
    known; before that the exchange whose API the path belongs to, so an unknown account and an
    ungranted one answer alike (None: the proxy's own JSON)."""
    if ctx.answer_as is not None:
        return ctx.answer_as
    path = ctx.path if ctx.account is not None else split_target(ctx.path.encode("latin-1"))[1]
    return for_path(path)


def error_reply(request_id: str, refusal: Refusal, exchange: Exchange | None) -> Reply:
    """A refusal as the bot gets it: in ``exchange``'s error format, chosen so that ccxt raises
    the class a bot's retry logic treats right (docs/interface.md "Refusals"), or the proxy's
    own JSON without an exchange; ``X-Proxy-Error`` names the code either way."""
    view = RefusalView(refusal.status, refusal.code, refusal.message, refusal.rule or refusal.code,
                       request_id)
    rendered = exchange.capabilities.errors.render(view) if exchange is not None else contract_refusal(view)
    headers: list[tuple[str, str]] = [
        ("content-type", rendered.content_type), ("x-proxy-error", refusal.code),
    ]
    retry_after = getattr(refusal, "retry_after", None)  # RateLimited; AccountPaused (cool-down)
    if retry_after is not None:
        headers.append(("retry-after", str(retry_after)))
    if isinstance(refusal, Unauthenticated):
        headers.append(("proxy-authenticate", 'Bearer realm="signing-proxy"'))
    return Reply(refusal.status, tuple(headers), rendered.body)


def intent_fields(intent: Intent) -> dict[str, Any]:
    """An intent as audit fields: money as strings, absent fields left out."""
    fields: dict[str, Any] = {}
    for key, value in (
        ("symbol", intent.symbol), ("side", intent.side), ("type", intent.order_type),
        ("quantity", intent.quantity), ("quote_quantity", intent.quote_quantity),
        ("price", intent.price), ("notional", intent.notional), ("client_order_id", intent.client_order_id),
    ):
        if value is not None:
            fields[key] = value if isinstance(value, str) else str(value)
    return fields


def utc_stamp(ns: int) -> str:
    """``ns`` (Unix time) as an audit record's ``ts``, ``2026-01-02T03:04:05.123456Z``, as
    ``datetime.isoformat`` writes it; the date and time of day are formatted once a second,
    not on every record."""
    seconds, micros = divmod(ns // 1000, 1_000_000)
    return f"{_utc_second(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def exchange_order_ids(exchange: str | None, body: bytes, *, batch: bool = False) -> tuple[str, ...]:
    """The order ids in a placement answer, read where the exchange's capabilities say its
    answer has them (``order_ids``); () for an unknown exchange or an answer without one."""
    known = exchanges.find(exchange or "")
    return known.capabilities.order_ids.extract(body, batch=batch) if known is not None else ()
