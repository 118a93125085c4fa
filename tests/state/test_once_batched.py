"""The idempotency state machine's tests (tests/state/test_once.py) again, with the worker's
group commit (proxy.state.group_commit) doing the claims, completions and decision records,
against both real stores. The sender checks that each order's decision record was durable
before it was sent."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import tests.state.test_once as steps
from proxy.errors import RateLimited, Refusal
from proxy.exchanges.base import Credentials
from proxy.model.request import Prepared, Stamp
from proxy.ops.metrics import Metrics
from proxy.pipeline.accounts import Account
from proxy.pipeline.decision import Decisions, RequestContext
from proxy.pipeline.http import Reply
from proxy.pipeline.once import Once
from proxy.pipeline.send import Held
from proxy.policy.evaluate import Decision
from proxy.state import StateStore
from proxy.state.batches import group_commit
from proxy.state.group_commit import Spend
from tests.state.test_once import (
    test_once_a_batch_is_placed_once_and_its_ids_are_not_reusable,
    test_once_a_lost_answer_is_looked_up_before_placing_again,
    test_once_a_rate_limited_order_is_placed_by_the_retry,
    test_once_an_order_claimed_before_the_digest_format_marker_still_replays,
    test_once_same_id_other_content_is_a_conflict_and_sends_nothing,
    test_once_twenty_concurrent_retries_place_one_order_and_replay_its_answer,
)

__all__ = [
    "test_once_a_batch_is_placed_once_and_its_ids_are_not_reusable",
    "test_once_a_lost_answer_is_looked_up_before_placing_again",
    "test_once_a_rate_limited_order_is_placed_by_the_retry",
    "test_once_an_order_claimed_before_the_digest_format_marker_still_replays",
    "test_once_same_id_other_content_is_a_conflict_and_sends_nothing",
    "test_once_twenty_concurrent_retries_place_one_order_and_replay_its_answer",
]

_IO = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-audit")


class _Log:
    """The audit trail as the group commit sees it: appends, all durable at once."""

    executor = _IO

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append_batch(self, records: list[dict[str, Any]]) -> list[Exception | None]:
        self.records.extend(records)
        return [None] * len(records)


class _Sender:
    """The sender's side of the batched path, over the test's scripted exchange."""

    def __init__(self, exchange: steps._Exchange, log: _Log) -> None:
        self.exchange = exchange
        self.log = log

    def batchable(self, account: Account) -> bool:
        return True

    @contextlib.asynccontextmanager
    async def hold(self, ctx: RequestContext, account: Account, creds: Credentials) -> AsyncIterator[Held]:
        yield Held(creds, None)

    def nonce_stamp(self, nonce: int) -> Stamp:
        return Stamp(now_ms=time.time_ns() // 1_000_000, nonce=nonce, unique="u")

    def time_stamp(self, account: Account) -> Stamp:
        now_ms = time.time_ns() // 1_000_000
        return Stamp(now_ms=now_ms, nonce=now_ms, unique="u")

    def weight_spend(self, account: Account, prepared: Prepared) -> Spend | None:
        return None

    def weight_refused(self, account: Account, retry_after: int) -> Refusal:
        return RateLimited("over budget", retry_after=retry_after, rule="rate_limit.account")

    async def send_recorded(self, ctx: RequestContext, account: Account, prepared: Prepared,
                            creds: Credentials, rule: str) -> Reply:
        decided = [r for r in self.log.records if r.get("phase") == "decision"]
        assert len(decided) > self.exchange.placed, "the decision record is durable before sending"
        return await self.exchange.send(ctx, account, prepared, creds, rule)


def _batched_machine(store: StateStore, exchange: steps._Exchange) -> tuple[Once, steps._Audit]:
    audit, log = steps._Audit(), _Log()

    async def charge(ctx: RequestContext, decision: Decision) -> Decision:
        return decision

    commit = group_commit(store, None, log)
    assert commit is not None
    decisions = Decisions(audit, Metrics(), lambda: "v1")
    decisions.commit = commit
    once = Once(store=store, decisions=decisions, charge=charge, send=exchange.send, ttl_s=3600,
                lease_s=30.0, wait_s=5.0, commit=commit, sender=_Sender(exchange, log))
    return once, audit


@pytest.fixture(autouse=True)
def _with_group_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(steps, "_machine", _batched_machine)
    yield
