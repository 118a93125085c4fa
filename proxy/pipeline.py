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
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from proxy.accounts import Account
from proxy.client_auth import TokenVerifier
from proxy.exchanges.base import Credentials, NonceUnit
from proxy.errors import (
    Forbidden,
    NotReady,
    PolicyDenied,
    ProxyError,
    RateLimited,
    Refusal,
    TooLarge,
    Unauthenticated,
)
from proxy.metrics import Metrics
from proxy.policy.evaluate import evaluate
from proxy.policy.model import PolicySet
from proxy.request_model import Inbound, Intent, Prepared, Stamp
from proxy.upstream import Upstream, UpstreamResponse

log = logging.getLogger("proxy.decision")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_ACCOUNT = re.compile(rb"[a-z0-9][a-z0-9_-]{0,62}")
NONCE_LOCK_TIMEOUT_S = 10.0


class AuditSink(Protocol):
    """Where decision and outcome records go; ``write`` returns once the record is durable."""

    async def write(self, record: Mapping[str, Any]) -> None: ...


class NonceSource(Protocol):
    """Strictly increasing per-key nonces (for exchanges whose ``nonce_unit`` is set), and a
    per-key lock so they reach the exchange in order. :mod:`proxy.state` implements it."""

    async def next_nonce(self, key_id: str, unit: NonceUnit, *, now_us: int | None = None) -> int: ...

    def key_lock(self, key_id: str, timeout_s: float) -> AbstractAsyncContextManager[Any]: ...


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
        nonces: NonceSource | None = None, clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.accounts = dict(accounts)
        self.policies = policies
        self.verifier = verifier
        self.upstream = upstream
        self.audit = audit
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.nonces = nonces
        self.clock_ns = clock_ns
        self.ready = False
        self._background: set[asyncio.Task[None]] = set()

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
            return await self._refuse(ctx, NotReady(f"the proxy cannot serve this now ({type(exc).__name__})"))

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
        # An ungranted account must look exactly like an unknown one, even for bad requests.
        policy = self.policies.for_client(ctx.client)
        if policy is None or policy.grant_for(account.name) is None:
            raise Forbidden("no such account, or not granted to this client")
        prepared = account.exchange.prepare(inbound)
        ctx.prepared, ctx.category = prepared, str(prepared.category)
        decision = evaluate(self.policies, ctx.client, account.name, prepared)
        if not decision.allowed:
            if decision.code == "forbidden":
                raise Forbidden("no such account, or not granted to this client")
            raise PolicyDenied(decision.message, rule=decision.rule)
        creds = account.creds
        if creds is None:
            raise NotReady(f"the secret for account {account.name} is not loaded")
        ctx.key_version = creds.version
        unit = account.exchange.nonce_unit
        if unit is None:
            stamp = Stamp(now_ms=now_ns // 1_000_000, nonce=now_ns // 1_000_000, unique=str(uuid.uuid4()))
            return await self._send(ctx, account, prepared, creds, stamp, decision.rule)
        if self.nonces is None:
            raise NotReady("no nonce store is configured for this exchange")
        # Strictly increasing nonces must also arrive in order: hold the key from allocation
        # until the exchange has answered (across workers and, with Redis, hosts).
        key_id = f"{account.cfg.exchange}:{creds.api_key}"
        async with self.nonces.key_lock(key_id, NONCE_LOCK_TIMEOUT_S):
            nonce = await self.nonces.next_nonce(key_id, unit, now_us=self.clock_ns() // 1000)
            stamp = Stamp(now_ms=self.clock_ns() // 1_000_000, nonce=nonce, unique=str(uuid.uuid4()))
            return await self._send(ctx, account, prepared, creds, stamp, decision.rule)

    async def _send(
        self, ctx: _Ctx, account: Account, prepared: Prepared, creds: Credentials, stamp: Stamp,
        rule: str,
    ) -> Reply:
        ctx.stamp = stamp
        outbound = account.exchange.sign(prepared, creds, stamp, account.host)
        await self._audit(ctx, "allow", rule, phase="decision")
        response = await self.upstream.send(account.cfg.base_url, outbound)
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
            record["intents"] = [_intent_fields(i) for i in intents]
        if ctx.stamp is not None:
            record["stamp_ms"] = ctx.stamp.now_ms
            if ctx.stamp.nonce != ctx.stamp.now_ms:
                record["nonce"] = ctx.stamp.nonce
        record.update(ctx.extra)
        return record

    async def _audit(self, ctx: _Ctx, decision: str, rule: str, phase: str) -> None:
        try:
            await self.audit.write(self._record(ctx, decision, rule, phase))
        except NotReady:
            raise
        except Exception as exc:  # any failure to make the record durable: fail closed
            raise NotReady(f"the audit trail is not writable ({type(exc).__name__}); nothing was sent") from None

    async def _outcome(self, ctx: _Ctx, response: UpstreamResponse) -> None:
        """Queue the outcome record without waiting for its fsync: the decision record was
        durable before anything was sent, and the outcome rides the next group commit, so the
        bot does not pay a second fsync."""
        ctx.extra.update({"upstream_status": response.status, "upstream_ms": round(response.latency_ms, 3)})
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
        if refusal.code not in ("not_ready",) or ctx.client is not None:
            try:
                await self.audit.write(self._record(ctx, "deny", rule, "decision"))
            except Exception:
                log.error("audit record not written for refused request %s", ctx.request_id)
                self.metrics.inc("proxy_audit_errors_total", help="audit records that could not be written")
        self._log(ctx, "deny", rule, refusal.status, None)
        error: dict[str, Any] = {"code": refusal.code, "message": refusal.message, "request_id": ctx.request_id}
        if refusal.rule:
            error["rule"] = refusal.rule
        headers: list[tuple[str, str]] = [
            ("content-type", "application/json"), ("x-proxy-error", refusal.code),
        ]
        if isinstance(refusal, RateLimited):
            headers.append(("retry-after", str(refusal.retry_after)))
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
            raise TooLarge("send one valid Content-Length") if declared[0].isdigit() else TooLarge(
                "Content-Length is not a number"
            )
        if int(declared[0]) > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise TooLarge("the client went away before sending the body")
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
