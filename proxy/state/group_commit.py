"""One durability owner per worker: group commit of what each order must make durable.

Before an order is sent, three things must be durable: its idempotency claim, its share of the
account's weight budget and its audit decision record (on a nonce exchange also its nonce,
allocated with the claim and named in the record). Done one by one, each is a thread
hand-off and an fsync, and at 16 connections the orders queue behind each other's
transactions. Here every order that arrives while a batch is being made durable goes into the
next batch: one state-store transaction (sqlite) or one pipelined round trip (Redis) for all
claims, then one audit append with one fdatasync for all decision records, then one wake-up of
the waiting requests. With sqlite the whole batch runs on the store's one thread: the only
thread hop on the path, and the one that waits for the disk (the backends:
:mod:`proxy.state.batches`).

Completions (the exchange's answer kept for replay) and outcome records are queued into the
next batch; the bot does not wait for them. A completion lost to ``kill -9`` leaves the claim
in flight: after its lease a retry asks the exchange by client order id
(proxy.pipeline.lookup), as for any crash between sending and completing.

Order: ops are applied in the order they were queued, so a worker's completion of an id is
always seen by its own next claim of that id. Other workers see it once the batch commits
(until then their claim is InFlight and waits, as before).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from proxy.errors import NotReady
from proxy.state.base import BeginResult, IdempotencyScope, NonceUnit, Owner, StoredResponse
from proxy.state.rules import nonce_key_fingerprint

log = logging.getLogger("proxy.state.group_commit")

NONCE_KEY = "nonce_key"
"""The decision record's field that names the nonce's key by its fingerprint."""

LINGER_S = 0.005
"""How long queued work that nobody waits for (completions, outcome records) may wait for an
order to share its batch before it is flushed on its own."""


@dataclass(frozen=True)
class Spend:
    """A weight spend that must fit before the order may be sent (proxy.rate_limits)."""

    key: str
    limit: int
    window_s: int
    cost: int


@dataclass(frozen=True)
class NonceRequest:
    """A nonce the batch allocates for an owner in the same transaction (sqlite) or round trip
    (Redis) as its claim; the caller holds the key's lock, so nonces also arrive in order."""

    key_id: str
    unit: NonceUnit
    now_us: int

    @property
    def fingerprint(self) -> str:
        """The key as the decision record names it (``nonce_key``, never the API key)."""
        return nonce_key_fingerprint(self.key_id)


@dataclass(frozen=True)
class Budget:
    """A policy budget charged for an owner in its batch (``proxy.policy.runtime.charge``):
    ``amount`` (in the store's units) joins the window ``key`` unless the total would exceed
    ``limit``; then the claim is not kept and the order is refused."""

    key: str
    amount: Decimal
    window_s: int
    limit: Decimal


class SpendAnswer(Protocol):
    @property
    def allowed(self) -> bool: ...

    @property
    def retry_after(self) -> int: ...


class DurableLog(Protocol):
    """The audit trail: appends records and returns once they are durable, one error slot each."""

    def append_batch(self, records: list[dict[str, Any]]) -> list[Exception | None]: ...

    @property
    def executor(self) -> Executor: ...


@dataclass(frozen=True)
class Claimed:
    """What ``claim`` got: the idempotency result, and for an owner whether its weight was
    refused (then the claim was not kept and nothing is recorded) or its decision record is
    now durable (``recorded``; the order may be sent)."""

    result: BeginResult
    refused: SpendAnswer | None = None
    recorded: bool = False
    #: the nonce allocated for this order (a ``NonceRequest`` that was recorded), to sign with
    nonce: int | None = None
    #: the first budget over its limit (its index) and the total it would have reached; the
    #: claim was not kept and nothing is recorded
    over: tuple[int, Decimal] | None = None


@dataclass(eq=False)
class Claim:
    scope: IdempotencyScope
    content_hash: str
    ttl_s: float
    lease_s: float
    spend: Spend | None
    record: dict[str, Any] | None
    future: asyncio.Future[Claimed]
    result: BeginResult | None = None
    refused: SpendAnswer | None = None
    error: Exception | None = None
    recorded: bool = False
    nonce: NonceRequest | None = None
    nonce_value: int | None = None
    budgets: tuple[Budget, ...] = ()
    over: tuple[int, Decimal] | None = None

    @property
    def wants_record(self) -> bool:
        r = self.result
        return self.record is not None and isinstance(r, Owner) and not r.previous_unknown

    def allocated(self, value: int) -> None:
        """The batch allocated ``value``: the decision record names the nonce that is signed
        and the key's fingerprint (the start-up replay raises the key's floor from them)."""
        assert self.record is not None and self.nonce is not None
        self.nonce_value = self.record["nonce"] = value
        self.record[NONCE_KEY] = self.nonce.fingerprint


@dataclass(eq=False)
class Complete:
    scope: IdempotencyScope
    response: StoredResponse
    token: str | None
    ttl_s: float
    failed: bool = False


@dataclass(eq=False)
class Abandon:
    scope: IdempotencyScope
    token: str | None
    future: asyncio.Future[bool]
    done: bool = False
    error: Exception | None = None


@dataclass(eq=False)
class Outcome:
    record: dict[str, Any]


Op = Claim | Complete | Abandon | Outcome


class Backend(Protocol):
    """Makes one batch durable (proxy.state.batches: sqlite, Redis), filling in each op."""

    async def apply(self, ops: list[Op], audit: DurableLog) -> None: ...


class GroupCommit:
    """The worker's durability owner (see the module docstring); the backends' side is in
    :mod:`proxy.state.batches`."""

    def __init__(self, backend: Backend, audit: DurableLog,
                 on_error: Callable[[str], None] | None = None) -> None:
        self._backend = backend
        self._audit = audit
        self._queue: list[Op] = []
        self._flusher: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._on_error = on_error or (lambda what: None)
        self.batches = 0
        self.ops = 0

    # -- the requests' side -------------------------------------------------------------------

    async def claim(
        self, scope: IdempotencyScope, content_hash: str, ttl_s: float, *, lease_s: float,
        spend: Spend | None = None, record: Mapping[str, Any] | None = None,
        nonce: NonceRequest | None = None, budgets: tuple[Budget, ...] = (),
    ) -> Claimed:
        """Claim ``scope`` in the next batch. If this request becomes its owner (and no earlier
        attempt's outcome is unknown), ``nonce`` is allocated (and written into the record),
        ``budgets`` and ``spend`` charged and ``record`` made durable in the same batch; returns
        once all of it is durable. Raises NotReady if it cannot be."""
        fut: asyncio.Future[Claimed] = asyncio.get_running_loop().create_future()
        assert nonce is None or record is not None, "a nonce is allocated for a recorded order"
        self._queue.append(Claim(scope, content_hash, ttl_s, lease_s, spend,
                                  None if record is None else dict(record), fut, nonce=nonce,
                                  budgets=budgets))
        self._kick(now=True)
        return await fut

    def complete(self, scope: IdempotencyScope, response: StoredResponse, *, token: str | None,
                 ttl_s: float) -> None:
        """Queue the answer for replay; the caller does not wait."""
        self._queue.append(Complete(scope, response, token, ttl_s))
        self._kick(now=False)

    async def abandon(self, scope: IdempotencyScope, *, token: str | None) -> bool:
        """Forget a claim whose order was never sent; returns once the next batch committed it."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append(Abandon(scope, token, fut))
        self._kick(now=True)
        return await fut

    def outcome(self, record: Mapping[str, Any]) -> None:
        """Queue an outcome record for the next batch's audit append; the caller does not wait."""
        self._queue.append(Outcome(dict(record)))
        self._kick(now=False)

    async def drain(self) -> None:
        """Flush everything queued (shutdown)."""
        while self._queue or (self._flusher is not None and not self._flusher.done()):
            self._kick(now=True)
            if self._flusher is not None:
                await asyncio.shield(self._flusher)

    # -- the owner ------------------------------------------------------------------------------

    def _kick(self, *, now: bool) -> None:
        if self._flusher is not None and not self._flusher.done():
            return  # the running flusher takes everything queued when its batch is done
        if now:
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER_S, self._lingered)

    def _lingered(self) -> None:
        self._linger = None
        if self._queue:
            self._kick(now=True)

    async def _flush_loop(self) -> None:
        while self._queue:
            ops, self._queue = self._queue, []
            self.batches += 1
            self.ops += len(ops)
            try:
                await self._backend.apply(ops, self._audit)
            except Exception as exc:  # a bug or a broken executor: fail every waiter closed
                log.error("group commit failed: %s", type(exc).__name__)
                for op in ops:
                    if isinstance(op, Claim) and op.error is None and not op.recorded:
                        op.error = NotReady(f"the state store failed ({type(exc).__name__})")
            self._settle(ops)

    def _settle(self, ops: list[Op]) -> None:
        for op in ops:
            if isinstance(op, Claim):
                if op.future.done():
                    continue
                if op.error is not None:
                    op.future.set_exception(op.error)
                else:
                    assert op.result is not None
                    op.future.set_result(Claimed(op.result, op.refused, op.recorded,
                                                 op.nonce_value if op.recorded else None, op.over))
            elif isinstance(op, Abandon):
                if op.future.done():
                    continue
                if op.error is not None:
                    op.future.set_exception(op.error)
                else:
                    op.future.set_result(op.done)
            elif isinstance(op, Complete) and op.failed:
                # the claim stays in flight: after its lease a retry looks the order up
                log.error("an idempotency completion was not stored")
                self._on_error("complete")


def records_of(ops: list[Op]) -> list[tuple[Claim | None, dict[str, Any]]]:
    """The audit records of a batch in queue order: decision records of claims that got their
    order (owner, weight fits), and queued outcome records."""
    out: list[tuple[Claim | None, dict[str, Any]]] = []
    for op in ops:
        if (isinstance(op, Claim) and op.error is None and op.refused is None and op.over is None
                and op.wants_record):
            assert op.record is not None
            out.append((op, op.record))
        elif isinstance(op, Outcome):
            out.append((None, op.record))
    return out


def audit_results(pairs: list[tuple[Claim | None, dict[str, Any]]], errors: list[Exception | None]
                   ) -> list[Claim]:
    """Mark claims recorded; returns the claims whose record failed (their claim must go)."""
    failed: list[Claim] = []
    for (claim, _), error in zip(pairs, errors, strict=True):
        if claim is None:
            if error is not None:
                log.error("audit outcome record not written: %s", type(error).__name__)
            continue
        if claim.error is not None:
            continue  # its claim did not commit: the order is refused whatever the record did
        if error is None:
            claim.recorded = True
        else:
            claim.error = error if isinstance(error, NotReady) else NotReady(
                f"the audit trail is not writable ({type(error).__name__}); nothing was sent")
            failed.append(claim)
    return failed
