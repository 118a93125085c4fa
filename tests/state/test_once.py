"""The idempotency state machine (``proxy.pipeline.once``) in-process, against both real stores.

The "exchange" here is a function that counts what it is asked to send and answers as told;
the state machine and the stores are the real ones. The same guarantees are tested end to end
through ``serve`` in tests/integration/test_idempotency*.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from proxy.errors import IdempotencyConflict, UpstreamTimeout
from proxy.exchanges import binance, bybit
from proxy.exchanges.base import Credentials, Exchange
from proxy.model.request import Inbound, Prepared
from proxy.model.sensitive import Secret
from proxy.ops.metrics import Metrics
from proxy.pipeline.accounts import Account
from proxy.pipeline.decision import Decisions, RequestContext
from proxy.pipeline.http import Reply
from proxy.pipeline.once import REPLAY_HEADER, Once
from proxy.policy.evaluate import Decision
from proxy.state import StateStore
from tests.state.conftest import Target

CREDS = Credentials("key", binance.EXCHANGE.load_credentials(
    {"api_key": Secret("key"), "api_secret": Secret("s" * 64)}, 1).key, version=1)
ALLOW = Decision(code="allow", rule="grant")


@dataclass
class _Cfg:
    name: str
    exchange: str


class _Audit:
    def __init__(self) -> None:
        self.records: list[Mapping[str, Any]] = []

    async def write(self, record: Mapping[str, Any]) -> None:
        self.records.append(record)


class _Exchange:
    """Answers sends as scripted; counts placements and lookups separately."""

    def __init__(self, answers: Callable[[Prepared, int], Awaitable[Reply]]) -> None:
        self.answers = answers
        self.placed = 0
        self.looked_up = 0

    async def send(self, ctx: RequestContext, account: Account, prepared: Prepared, creds: Credentials,
                   rule: str) -> Reply:
        lookup = rule == "idempotency.lookup"
        if lookup:
            self.looked_up += 1
        else:
            self.placed += 1
        ctx.sent = True
        return await self.answers(prepared, self.placed)


async def _ok(prepared: Prepared, n: int) -> Reply:
    await asyncio.sleep(0)  # let concurrent requests interleave
    return Reply(200, (("content-type", "application/json"),), b'{"orderId": %d}' % n)


def _order(exchange: Exchange, path: str, query: str = "", body: str = "") -> Prepared:
    headers = (("content-type", "application/json"),) if body else ()
    return exchange.prepare(Inbound("POST", path, query.encode(), headers, body.encode()))


def _binance(coid: str, qty: str = "0.01") -> Prepared:
    return _order(binance.EXCHANGE, "/api/v3/order",
                  f"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity={qty}&price=50000"
                  f"&newClientOrderId={coid}")


def _machine(store: StateStore, exchange: _Exchange) -> tuple[Once, _Audit]:
    audit = _Audit()

    async def charge(ctx: RequestContext, decision: Decision) -> Decision:
        return decision

    decisions = Decisions(audit, Metrics(), lambda: "v1")
    once = Once(store=store, decisions=decisions, charge=charge, send=exchange.send, ttl_s=3600,
                lease_s=30.0, wait_s=5.0)
    return once, audit


def _ctx() -> RequestContext:
    return RequestContext(request_id="r", method="POST", path="/", started=0.0, client="bot",
                          account="main")


def _account(name: str, exchange: Exchange) -> Account:
    cfg: Any = _Cfg(name, exchange.name)
    return Account(cfg=cfg, exchange=exchange, host="localhost", creds=CREDS)


def _run(target: Target, fn: Callable[[StateStore], Awaitable[None]]) -> None:
    async def body() -> None:
        store = target.open()
        try:
            await fn(store)
        finally:
            await store.close()

    asyncio.run(body())


def test_once_twenty_concurrent_retries_place_one_order_and_replay_its_answer(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        exchange = _Exchange(_ok)
        once, audit = _machine(store, exchange)
        account, order = _account(f"a-{target.prefix}", binance.EXCHANGE), _binance("c1")
        replies = await asyncio.gather(*(
            once.single(_ctx(), account, order, CREDS, ALLOW, "c1") for _ in range(20)))
        assert exchange.placed == 1
        assert {r.body for r in replies} == {b'{"orderId": 1}'}
        assert sum(REPLAY_HEADER in r.headers for r in replies) == 19
        assert sum(1 for r in audit.records if r["rule"] == "idempotency.replay") == 19

    _run(target, fn)


def test_once_same_id_other_content_is_a_conflict_and_sends_nothing(target: Target) -> None:
    async def fn(store: StateStore) -> None:
        exchange = _Exchange(_ok)
        once, _ = _machine(store, exchange)
        account = _account(f"a-{target.prefix}", binance.EXCHANGE)
        await once.single(_ctx(), account, _binance("c2"), CREDS, ALLOW, "c2")
        with pytest.raises(IdempotencyConflict):
            await once.single(_ctx(), account, _binance("c2", qty="0.02"), CREDS, ALLOW, "c2")
        assert exchange.placed == 1

    _run(target, fn)


def test_once_a_rate_limited_order_is_placed_by_the_retry(target: Target) -> None:
    async def answers(prepared: Prepared, n: int) -> Reply:
        return Reply(429, (), b'{"code":-1003}') if n == 1 else await _ok(prepared, n)

    async def fn(store: StateStore) -> None:
        exchange = _Exchange(answers)
        once, _ = _machine(store, exchange)
        account, order = _account(f"a-{target.prefix}", binance.EXCHANGE), _binance("c3")
        assert (await once.single(_ctx(), account, order, CREDS, ALLOW, "c3")).status == 429
        assert (await once.single(_ctx(), account, order, CREDS, ALLOW, "c3")).status == 200
        assert exchange.placed == 2

    _run(target, fn)


def test_once_a_lost_answer_is_looked_up_before_placing_again(target: Target) -> None:
    """The first send times out after reaching the exchange; the retry asks by client order id
    (found: its answer stands), and never places a second order."""
    async def answers(prepared: Prepared, n: int) -> Reply:
        if prepared.path == "/api/v3/order" and prepared.method == "GET":
            return Reply(200, (), b'{"orderId": 7, "clientOrderId": "c4", "status": "NEW"}')
        raise UpstreamTimeout("the exchange did not answer in time")

    async def fn(store: StateStore) -> None:
        exchange = _Exchange(answers)
        once, _ = _machine(store, exchange)
        account, order = _account(f"a-{target.prefix}", binance.EXCHANGE), _binance("c4")
        with pytest.raises(UpstreamTimeout):
            await once.single(_ctx(), account, order, CREDS, ALLOW, "c4")
        retry = await once.single(_ctx(), account, order, CREDS, ALLOW, "c4")
        assert retry.status == 200 and b'"orderId": 7' in retry.body
        assert (exchange.placed, exchange.looked_up) == (1, 1)
        again = await once.single(_ctx(), account, order, CREDS, ALLOW, "c4")  # now a plain replay
        assert REPLAY_HEADER in again.headers and exchange.looked_up == 1

    _run(target, fn)


def test_once_a_batch_is_placed_once_and_its_ids_are_not_reusable(target: Target) -> None:
    body = ('{"category":"spot","request":[{"symbol":"BTCUSDT","side":"Buy","orderType":"Limit",'
            '"qty":"0.01","price":"40000","orderLinkId":"b1"},{"symbol":"BTCUSDT","side":"Buy",'
            '"orderType":"Limit","qty":"0.01","price":"40000","orderLinkId":"b2"}]}')

    async def fn(store: StateStore) -> None:
        exchange = _Exchange(_ok)
        once, _ = _machine(store, exchange)
        account = _account(f"a-{target.prefix}", bybit.EXCHANGE)
        batch = _order(bybit.EXCHANGE, "/v5/order/create-batch", body=body)
        replies = await asyncio.gather(*(once.batch(_ctx(), account, batch, CREDS, ALLOW) for _ in range(5)))
        assert exchange.placed == 1 and len({r.body for r in replies}) == 1
        with pytest.raises(IdempotencyConflict):  # b1 alone, as a single order, is refused
            single = _order(bybit.EXCHANGE, "/v5/order/create", body=(
                '{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.01",'
                '"price":"40000","orderLinkId":"b1"}'))
            await once.single(_ctx(), account, single, CREDS, ALLOW, "b1")
        assert exchange.placed == 1

    _run(target, fn)
