"""A nonce exchange's orders through the group commit, in process: the real sender, the real
Kraken emulator (which refuses any nonce not above the key's last) and both real stores.
Orders under a policy budget take the same batch, which charges the budget with the claim.

The batch allocates each order's nonce with its claim and writes it into the decision record;
the order is signed with exactly that nonce. The records reach the audit trail only through the
group commit (the one-step-at-a-time way writes to another sink here), so finding them there,
naming the nonces the exchange saw, shows the placement took the batch."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest

from proxy.errors import NonceUnitChanged, RateLimited
from proxy.exchanges import kraken
from proxy.guards.hooks import ExchangeSafety
from proxy.model.request import Inbound, Prepared
from proxy.model.sensitive import Secret
from proxy.ops.metrics import Metrics
from proxy.pipeline.accounts import Account
from proxy.pipeline.decision import Decisions, RequestContext
from proxy.pipeline.once import Once
from proxy.pipeline.send import Sender
from proxy.policy.evaluate import Charge, Decision
from proxy.state import IdempotencyScope, Owner, StateStore
from proxy.state.batches import group_commit
from proxy.state.group_commit import GroupCommit
from proxy.upstream import Upstream
from proxy_devkit.emulator.kraken import KrakenState, create
from proxy_devkit.emulator.server import BackgroundServer
from tests.state.conftest import Target
from tests.state.test_once import _Audit
from tests.state.test_once_batched import _Log

KEY = "kraken-batch-nonce-key"
SECRET = base64.b64encode(bytes(range(64))).decode()
CREDS = kraken.EXCHANGE.load_credentials({"api_key": Secret(KEY), "api_secret": Secret(SECRET)}, 1)
ALLOW = Decision(code="allow", rule="grant")
ORDERS = 12


@dataclass(frozen=True)
class _Cfg:
    name: str
    base_url: str
    exchange: str = "kraken"
    weight_per_minute: int | None = None


@pytest.fixture
def emulator() -> Iterator[tuple[KrakenState, str]]:
    state, app = create({KEY: {"api_secret": SECRET}})
    with BackgroundServer(app) as server:
        yield state, server.url


@dataclass
class _Proxy:
    once: Once
    commit: GroupCommit
    log: _Log
    direct: _Audit
    account: Account


async def _proxy(store: StateStore, url: str, name: str) -> tuple[_Proxy, Upstream]:
    upstream = Upstream(10.0)
    await upstream.start()
    log, direct = _Log(), _Audit()
    commit = group_commit(store, None, log)
    assert commit is not None
    decisions = Decisions(direct, Metrics(), lambda: "v1")
    decisions.commit = commit
    sender = Sender(upstream=upstream, store=store, safety=ExchangeSafety(store=store, metrics=Metrics()),
                    decisions=decisions)

    async def charge(ctx: RequestContext, decision: Decision) -> Decision:
        return decision

    once = Once(store=store, decisions=decisions, charge=charge, send=sender.stamp_and_send, ttl_s=3600,
                lease_s=30.0, wait_s=5.0, commit=commit, sender=sender)
    cfg: object = _Cfg(name, url)
    account = Account(cfg=cfg, exchange=kraken.EXCHANGE, host=url.split("//", 1)[1],  # type: ignore[arg-type]
                      creds=CREDS)
    return _Proxy(once, commit, log, direct, account), upstream


@contextlib.asynccontextmanager
async def _running(target: Target, url: str) -> AsyncIterator[tuple[_Proxy, StateStore]]:
    """The store, the proxy's pieces over it and an upstream client, closed after the block."""
    store = target.open()
    proxy, upstream = await _proxy(store, url, f"a-{target.prefix}")
    try:
        yield proxy, store
    finally:
        await upstream.close()
        await store.close()


def _order(coid: str) -> Prepared:
    body = f"pair=XBTUSD&type=buy&ordertype=limit&volume=0.001&price=1000&cl_ord_id={coid}"
    return kraken.EXCHANGE.prepare(Inbound(
        "POST", "/0/private/AddOrder", b"", (("content-type", "application/x-www-form-urlencoded"),),
        body.encode()))


def _ctx(n: int, prepared: Prepared) -> RequestContext:
    return RequestContext(request_id=f"r{n}", method="POST", path=prepared.path, started=0.0,
                          client="bot", account="main", exchange="kraken", prepared=prepared)


def test_nonce_orders_take_the_batch_and_record_the_nonce_signed(
    target: Target, emulator: tuple[KrakenState, str]
) -> None:
    state, url = emulator

    async def run() -> None:
        async with _running(target, url) as (proxy, store):
            coids = [f"c{i}" for i in range(ORDERS)]
            # every order at once, and a retry of each of the first three with the same id
            tries = [*coids, *coids[:3]]
            replies = await asyncio.gather(*(
                proxy.once.single(_ctx(n, _order(c)), proxy.account, _order(c), CREDS, ALLOW, c)
                for n, c in enumerate(tries)))
            assert {r.status for r in replies} == {200}
            await proxy.commit.drain()
            assert proxy.commit.batches >= ORDERS  # one key: its orders go out one by one
            last = await store.last_nonce(f"kraken:{KEY}")
        placed = [r for r in state.recorder.all() if r.path == "/0/private/AddOrder"]
        assert all(r.accepted for r in placed), [r.error for r in placed if not r.accepted][:3]
        sent = {dict(parse_qsl(r.body.decode()))["cl_ord_id"]: int(dict(parse_qsl(r.body.decode()))["nonce"])
                for r in placed}
        assert len(placed) == ORDERS and set(sent) == set(coids), "each id placed once"
        nonces = [int(dict(parse_qsl(r.body.decode()))["nonce"]) for r in placed]
        assert all(b > a for a, b in itertools.pairwise(nonces)), "nonces strictly increase"
        assert last is not None and last >= max(nonces)
        if target.backend == "sqlite":  # Redis also allocates for a retry that waits: skipped
            assert last == max(nonces), "sqlite allocates for owners only"
        decided = {r["client_order_id"]: r["nonce"] for r in proxy.log.records if r["phase"] == "decision"}
        assert decided == sent, "each decision record names the nonce the exchange saw"
        assert not [r for r in proxy.direct.records if r.get("phase") == "decision"
                    and r.get("rule") == "grant"], "no order took the one-step way"

    asyncio.run(run())


def test_a_nonce_unit_change_refuses_the_order_and_frees_its_id(
    target: Target, emulator: tuple[KrakenState, str]
) -> None:
    state, url = emulator

    async def run() -> None:
        async with _running(target, url) as (proxy, store):
            await store.raise_floor(f"kraken:{KEY}", "ms", 1)  # the key signed in ms before
            order = _order("u1")
            with pytest.raises(NonceUnitChanged):
                await proxy.once.single(_ctx(0, order), proxy.account, order, CREDS, ALLOW, "u1")
            again = await store.begin(IdempotencyScope("bot", proxy.account.name, "u1"), "other")
            assert isinstance(again, Owner) and not again.previous_unknown, "the claim was undone"
            assert await store.last_nonce(f"kraken:{KEY}") == 1
        assert not state.recorder.all(), "nothing was sent"

    asyncio.run(run())


def test_orders_under_a_budget_take_the_batch_and_stop_at_its_limit(
    target: Target, emulator: tuple[KrakenState, str]
) -> None:
    """A budget of 1000 (in notional) and orders of 300 each: three fit, the others are refused
    (429, the budget's rule), not sent, and their ids stay free; the window holds 900."""
    state, url = emulator
    budget = f"budget|{target.prefix}"
    charge = Charge(rule="budget.client.notional.1h", key=budget, amount=Decimal("300"), window_s=3600,
                    limit=Decimal("1000"))
    under = Decision(code="allow", rule="grant", charges=(charge,))

    async def run() -> None:
        async with _running(target, url) as (proxy, store):
            coids = [f"b{i}" for i in range(6)]
            results = await asyncio.gather(*(
                proxy.once.single(_ctx(n, _order(c)), proxy.account, _order(c), CREDS, under, c)
                for n, c in enumerate(coids)), return_exceptions=True)
            placed = [c for c, r in zip(coids, results, strict=True) if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, BaseException)]
            assert len(placed) == 3 and len(refused) == 3
            assert all(isinstance(r, RateLimited) and r.rule == charge.rule for r in refused), refused
            for c in set(coids) - set(placed):  # a refused order kept no claim
                again = await store.begin(IdempotencyScope("bot", proxy.account.name, c), "other")
                assert isinstance(again, Owner) and not again.previous_unknown
            assert await store.add_to_window(budget, 0, 3600) == Decimal("900")
            await proxy.commit.drain()
        sent = {dict(parse_qsl(r.body.decode()))["cl_ord_id"] for r in state.recorder.all()}
        assert sent == set(placed) and all(r.accepted for r in state.recorder.all())
        decided = {r["client_order_id"] for r in proxy.log.records if r["phase"] == "decision"}
        assert decided == set(placed), "the placed orders' records came through the group commit"

    asyncio.run(run())
