"""What one request decided, said once: the typed context, its audit record, the one decision
log line, and the error body a bot gets.

Every field an audit record can carry is a typed field of ``RequestContext``, so no stage can
overwrite another's field by accident; the record is built from it in one place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from proxy import exchanges
from proxy.errors import NotReady, Refusal, Unauthenticated
from proxy.model.request import Category, Intent, Prepared, Stamp
from proxy.ops.metrics import Metrics
from proxy.pipeline.http import Reply
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

    def lookup(self, prepared: Prepared) -> RequestContext:
        """The context of a lookup the proxy makes on this request's behalf (same request id)."""
        return replace(
            self, method=prepared.method, path=prepared.path, category=str(prepared.category),
            prepared=prepared, stamp=None, sent=False, injected_coid=None,
            client_order_id_injected=False, would_deny=None, idempotent_replay=False,
            client_order_ids=None, order_lookup=None, order_lookup_for=self.prepared_coid,
            key_index=None, upstream_status=None, upstream_latency_ms=None, exchange_order_id=None,
            exchange_order_ids=None, error=None,
        )

    @property
    def prepared_coid(self) -> str | None:
        return self.prepared.client_order_id if self.prepared else None


_OPTIONAL = ("client_order_id_injected", "would_deny", "idempotent_replay", "order_lookup",
             "order_lookup_for", "key_index", "upstream_latency_ms", "exchange_order_id",
             "exchange_order_ids", "error")


class Decisions:
    """Writes a request's audit records and its one decision log line."""

    def __init__(self, audit: AuditSink, metrics: Metrics, policy_version: Callable[[], str]) -> None:
        self.audit = audit
        self.metrics = metrics
        self._policy_version = policy_version
        self._background: set[asyncio.Task[None]] = set()

    def record(self, ctx: RequestContext, decision: str, rule: str, phase: str) -> dict[str, Any]:
        prepared = ctx.prepared
        intents = prepared.intents if prepared else ()
        record: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
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
        if ctx.client_order_ids is not None:  # a batch: the record's client_order_id is per order
            record["client_order_ids"] = list(ctx.client_order_ids)
        for name in _OPTIONAL:
            value = getattr(ctx, name)
            if value is not None and value is not False:
                record[name] = value
        return record

    async def durable(self, ctx: RequestContext, decision: str, rule: str, phase: str) -> None:
        """Write a record and wait until it is durable; any failure fails closed."""
        try:
            await self.audit.write(self.record(ctx, decision, rule, phase))
        except NotReady:
            raise
        except Exception as exc:
            reason = f"the audit trail is not writable ({type(exc).__name__}); nothing was sent"
            raise NotReady(reason) from None

    def outcome(self, ctx: RequestContext, response: UpstreamResponse) -> None:
        """Queue the outcome record without waiting for its fsync: the decision record was
        durable before anything was sent, and the outcome rides the next group commit, so the
        bot does not pay a second fsync."""
        ctx.upstream_status = response.status
        ctx.upstream_latency_ms = round(response.latency_ms, 3)
        if ctx.prepared is not None and ctx.prepared.category is Category.TRADE and response.status < 300:
            batch = ctx.prepared.endpoint.batch
            ids = exchange_order_ids(ctx.exchange, response.body, batch=batch)
            ctx.exchange_order_id = ids[0] if ids else None
            ctx.exchange_order_ids = ids if batch and ids else None
        task = asyncio.create_task(self._write_outcome(self.record(ctx, "allow", "grant", "outcome")))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        self.log(ctx, "allow", "grant", response.status, response.status)

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

    async def refused(self, ctx: RequestContext, refusal: Refusal) -> Reply:
        """Audit and log a refusal, and render it for the bot."""
        rule = refusal.rule or refusal.code
        ctx.error = refusal.code
        # Once sent, the request was allowed and its decision record is written: the failure
        # (timeout, unreachable, garbage) is its outcome, not a second decision.
        decision, phase = ("allow", "outcome") if ctx.sent else ("deny", "decision")
        if refusal.code not in ("not_ready",) or ctx.client is not None:
            try:
                await self.audit.write(self.record(ctx, decision, rule, phase))
            except Exception:
                log.error("audit record not written for refused request %s", ctx.request_id)
                self.metrics.inc("proxy_audit_errors_total", help="audit records that could not be written")
        self.log(ctx, decision, rule, refusal.status, None)
        return error_reply(ctx.request_id, refusal)

    def log(self, ctx: RequestContext, decision: str, rule: str, status: int, upstream: int | None) -> None:
        """The one canonical decision line (and the request metrics)."""
        elapsed = (time.perf_counter() - ctx.started) * 1000
        labels = (("account", ctx.account or ""), ("decision", decision), ("status", str(status)))
        self.metrics.inc("proxy_requests_total", (("client", ctx.client or ""), *labels),
                         help="bot requests by client, account, decision and status")
        self.metrics.observe_ms("proxy_request_duration_seconds", (("account", ctx.account or ""),),
                                elapsed, help="time in the proxy including the exchange")
        if log.isEnabledFor(logging.INFO):
            log.info("decision", extra={"fields": {
                "request_id": ctx.request_id, "client": ctx.client, "account": ctx.account,
                "method": ctx.method, "path": ctx.prepared.path if ctx.prepared else ctx.path[:200],
                "category": ctx.category, "decision": decision, "rule": rule, "status": status,
                "upstream_status": upstream, "ms": round(elapsed, 3),
            }})


def error_reply(request_id: str, refusal: Refusal) -> Reply:
    """The contract's error body and headers for a refusal."""
    error: dict[str, Any] = {"code": refusal.code, "message": refusal.message, "request_id": request_id}
    if refusal.rule:
        error["rule"] = refusal.rule
    headers: list[tuple[str, str]] = [("content-type", "application/json"), ("x-proxy-error", refusal.code)]
    retry_after = getattr(refusal, "retry_after", None)  # RateLimited; AccountPaused (cool-down)
    if retry_after is not None:
        headers.append(("retry-after", str(retry_after)))
    if isinstance(refusal, Unauthenticated):
        headers.append(("proxy-authenticate", 'Bearer realm="signing-proxy"'))
    return Reply(refusal.status, tuple(headers), json.dumps({"error": error}).encode())


def intent_fields(intent: Intent) -> dict[str, Any]:
    """An intent as audit fields: money as strings, absent fields left out."""
    return {
        k: (str(v) if v is not None and not isinstance(v, str) else v)
        for k, v in {
            "symbol": intent.symbol, "side": intent.side, "type": intent.order_type,
            "quantity": intent.quantity, "quote_quantity": intent.quote_quantity,
            "price": intent.price, "notional": intent.notional, "client_order_id": intent.client_order_id,
        }.items()
        if v is not None
    }


def exchange_order_ids(exchange: str | None, body: bytes, *, batch: bool = False) -> tuple[str, ...]:
    """The order ids in a placement answer, read where the exchange's capabilities say its
    answer has them (``order_ids``); () for an unknown exchange or an answer without one."""
    known = exchanges.find(exchange or "")
    return known.capabilities.order_ids.extract(body, batch=batch) if known is not None else ()
