"""The idempotency state machine (``proxy.pipeline.once``) in-process, against both real stores.

The "exchange" here is a function that counts what it is asked to send and answers as told;
the state machine and the stores are the real ones. The same guarantees are tested end to end
through ``serve`` in tests/integration/test_idempotency*.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
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
from proxy.pipeline.lookup import batch_scope
from proxy.pipeline.once import REPLAY_HEADER, Once
from proxy.policy.evaluate import Decision
from proxy.state import Conflict, IdempotencyScope, InFlight, Owner, Replay, StateStore, StoredResponse
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


def _format_1(method: str, path: str, params: list[tuple[str, str]], body: Any = None) -> str:
    """The content digest as releases before the format marker stored it, written out from its
    definition (SHA-256 of the JSON of method, path, sorted pairs and the JSON body)."""
    text = json.dumps([method, path, sorted(params), body], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def test_once_an_order_claimed_before_the_digest_format_marker_still_replays(target: Target) -> None:
    """A retry across the upgrade that added the digest's format marker: the record stored
    by the earlier release (unmarked digest) replays; other content is still a conflict."""
    params = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
              ("quantity", "0.01"), ("price", "50000"), ("newClientOrderId", "old1")]
    batch_body = ('{"category":"spot","request":[{"symbol":"BTCUSDT","side":"Buy","orderType":"Limit",'
                  '"qty":"0.01","price":"40000","orderLinkId":"ob1"}]}')

    async def fn(store: StateStore) -> None:
        exchange = _Exchange(_ok)
        once, _ = _machine(store, exchange)
        account = _account(f"a-{target.prefix}", binance.EXCHANGE)
        stored = StoredResponse(200, (("content-type", "application/json"),), b'{"orderId": 41}')
        for scope, digest in (
            (IdempotencyScope("bot", account.name, "old1"), _format_1("POST", "/api/v3/order", params)),
            (batch_scope("bot", account.name, ["ob1"]),
             _format_1("POST", "/v5/order/create-batch", [], json.loads(batch_body))),
        ):
            began = await store.begin(scope, digest, 3600, lease_s=30.0)
            assert isinstance(began, Owner)
            await store.complete(scope, stored, token=began.token, ttl_s=3600)
        reply = await once.single(_ctx(), account, _binance("old1"), CREDS, ALLOW, "old1")
        assert (reply.body, REPLAY_HEADER in reply.headers) == (b'{"orderId": 41}', True)
        with pytest.raises(IdempotencyConflict):
            await once.single(_ctx(), account, _binance("old1", qty="0.02"), CREDS, ALLOW, "old1")
        batch = _order(bybit.EXCHANGE, "/v5/order/create-batch", body=batch_body)
        reply = await once.batch(_ctx(), account, batch, CREDS, ALLOW)
        assert (reply.body, REPLAY_HEADER in reply.headers) == (b'{"orderId": 41}', True)
        assert exchange.placed == 0
        # what is stored from now on carries the format marker (a completion may still be queued)
        await once.single(_ctx(), account, _binance("new1"), CREDS, ALLOW, "new1")
        new_scope = IdempotencyScope("bot", account.name, "new1")
        hashed = _format_1("POST", "/api/v3/order", [*params[:-1], ("newClientOrderId", "new1")])
        assert isinstance(await store.begin(new_scope, hashed, 3600, lease_s=30.0), Conflict)
        assert isinstance(await store.begin(new_scope, "1:" + hashed, 3600, lease_s=30.0), Replay | InFlight)
        assert exchange.placed == 1

    _run(target, fn)
