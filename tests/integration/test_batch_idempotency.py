"""Batch placements are idempotent: every order carries a client order id (injected where the
exchange takes one in batches, else the batch is refused), an identical retry replays the first
answer without reaching the exchange, and reusing any id for other content is a 409. Real proxy
process, real OpenBao, strict emulators; sqlite and Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from tests.support.redis_server import RedisServer
from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

ACCOUNTS = [
    AccountSpec("bybit-main", "bybit", {"api_key": "bybit_batch_0123", "api_secret": "bybit-batch-secret-0123456789"}),
    AccountSpec("okx-main", "okx", {"api_key": "okx-batch-key-0123", "api_secret": "OKXBATCHSECRET0123456789",
                                    "passphrase": "BatchPass1!"}),
    AccountSpec("kraken-main", "kraken", {"api_key": "kraken-batch-key-01",
                                          "api_secret": "a3Jha2VuLWJhdGNoLXNlY3JldC0wMTIzNDU2Nzg5"}),
]
POLICY = 'version = 1\nclient = "batch-bot"\n' + "".join(
    f'\n[[grants]]\naccount = "{a.name}"\nallow = ["read", "trade", "cancel"]\n' for a in ACCOUNTS
)
BYBIT_BATCH = "/v5/order/create-batch"
OKX_BATCH = "/api/v5/trade/batch-orders"


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"batch-{request.param}")
    if request.param == "sqlite":
        with start_stack(tmp, ACCOUNTS, {"batch-bot": POLICY}) as stack:
            yield stack
        return
    with RedisServer() as redis, start_stack(tmp, ACCOUNTS, {"batch-bot": POLICY},
                                             state_toml=f'backend = "redis"\nurl = "{redis.url}"') as stack:
        yield stack


def _post(stack: Stack, account: str, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{stack.proxy_url}/x/{account}{path}", content=json.dumps(body).encode(), timeout=30,
                      headers={"Content-Type": "application/json",
                               "Proxy-Authorization": f"Bearer {stack.token('batch-bot')}"})


def _bybit(ids: Sequence[str | None], qty: str = "0.01") -> dict[str, Any]:
    orders = []
    for coid in ids:
        order = {"symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": qty, "price": "40000"}
        if coid is not None:
            order["orderLinkId"] = coid
        orders.append(order)
    return {"category": "spot", "request": orders}


def _sent(stack: Stack, account: str, path: str) -> int:
    """Batch requests the exchange received (its own record, not the proxy's word)."""
    return sum(1 for r in stack.emulator(account).recorder.all() if r.path == path)


def _held(stack: Stack, account: str, field: str, coid: str) -> int:
    return sum(1 for o in stack.emulator(account).orders.values() if o.get(field) == coid)


def test_batch_identical_retry_is_placed_once_and_replayed(stack: Stack) -> None:
    tag = stack.dir.name[-3:].replace("-", "")
    ids = [f"bA{tag}1", f"bA{tag}2"]
    before = _sent(stack, "bybit-main", BYBIT_BATCH)
    first = _post(stack, "bybit-main", BYBIT_BATCH, _bybit(ids))
    assert first.status_code == 200, first.text
    # a retry reorders nothing but the JSON keys: still the same batch
    retries = [_post(stack, "bybit-main", BYBIT_BATCH, _bybit(ids)) for _ in range(3)]
    assert all(r.status_code == 200 and r.content == first.content for r in retries)
    assert all(r.headers.get("x-proxy-idempotent-replay") == "true" for r in retries)
    assert _sent(stack, "bybit-main", BYBIT_BATCH) == before + 1
    assert [_held(stack, "bybit-main", "orderLinkId", c) for c in ids] == [1, 1]
    mine = [r for r in stack.audit_records() if r.get("client_order_ids") == ids]
    assert {r["rule"] for r in mine} >= {"grant", "idempotency.replay"}


def test_batch_reusing_ids_for_other_content_is_a_conflict(stack: Stack) -> None:
    tag = stack.dir.name[-3:].replace("-", "")
    ids = [f"bC{tag}1", f"bC{tag}2"]
    assert _post(stack, "bybit-main", BYBIT_BATCH, _bybit(ids)).status_code == 200
    before = _sent(stack, "bybit-main", BYBIT_BATCH)
    changed = _post(stack, "bybit-main", BYBIT_BATCH, _bybit(ids, qty="0.02"))
    assert changed.status_code == 409 and changed.headers["x-proxy-error"] == "idempotency_conflict"
    # one id of the batch in another batch, or in a single order: also a conflict
    overlap = _post(stack, "bybit-main", BYBIT_BATCH, _bybit([ids[0], f"bC{tag}3"]))
    assert overlap.status_code == 409 and overlap.headers["x-proxy-error"] == "idempotency_conflict"
    single = _post(stack, "bybit-main", "/v5/order/create", {**_bybit([ids[1]])["request"][0], "category": "spot"})
    assert single.status_code == 409 and single.headers["x-proxy-error"] == "idempotency_conflict"
    assert _sent(stack, "bybit-main", BYBIT_BATCH) == before
    assert _held(stack, "bybit-main", "orderLinkId", f"bC{tag}3") == 0
    # the id refused in the overlapping batch was released: a new batch may use it
    fresh = _post(stack, "bybit-main", BYBIT_BATCH, _bybit([f"bC{tag}3"]))
    assert fresh.status_code == 200, fresh.text


def test_batch_without_ids_gets_one_per_order_in_batch_order(stack: Stack) -> None:
    orders = [{"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": sz, "px": "40000"}
              for sz in ("0.01", "0.02")]
    tag = stack.dir.name[-3:].replace("-", "")
    orders[1]["clOrdId"] = f"okxOwn{tag}"
    first = _post(stack, "okx-main", OKX_BATCH, orders)
    assert first.status_code == 200, first.text
    ids = first.headers["x-proxy-client-order-id"].split(",")
    assert len(ids) == 2 and ids[1] == f"okxOwn{tag}" and ids[0].startswith("batchbot") and ids[0].isalnum()
    assert [o["clOrdId"] for o in first.json()["data"]] == ids  # the exchange's own echo
    assert [_held(stack, "okx-main", "clOrdId", c) for c in ids] == [1, 1]
    # the bot retries with the ids it was given: the same batch, replayed
    before = _sent(stack, "okx-main", OKX_BATCH)
    retry = _post(stack, "okx-main", OKX_BATCH, [{**orders[0], "clOrdId": ids[0]}, orders[1]])
    assert retry.status_code == 200 and retry.content == first.content
    assert _sent(stack, "okx-main", OKX_BATCH) == before


def test_batch_refused_where_an_id_cannot_be_added(stack: Stack) -> None:
    body = {"pair": "XBTUSD", "orders": [
        {"type": "buy", "ordertype": "limit", "volume": "0.01", "price": "40000", "cl_ord_id": "krkOwn1"},
        {"type": "buy", "ordertype": "limit", "volume": "0.01", "price": "40000"}]}
    r = _post(stack, "kraken-main", "/0/private/AddOrderBatch", body)
    assert r.status_code == 400 and r.headers["x-proxy-error"] == "bad_request"
    assert "cl_ord_id" in proxy_error(r)["message"]
    assert _sent(stack, "kraken-main", "/0/private/AddOrderBatch") == 0
    dup = _post(stack, "bybit-main", BYBIT_BATCH, _bybit(["sameId1", "sameId1"]))
    assert dup.status_code == 400 and dup.headers["x-proxy-error"] == "bad_request"


def test_a_rate_limited_batch_keeps_its_ids_for_the_retry(stack: Stack) -> None:
    """429: the exchange placed nothing, so neither the batch nor its ids are spent."""
    tag = stack.dir.name[-3:].replace("-", "")
    orders = [{"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "0.01",
               "px": "40000", "clOrdId": f"okxRl{tag}{i}"} for i in (1, 2)]
    stack.emulator("okx-main").rate_limit(retry_after="1")
    limited = _post(stack, "okx-main", OKX_BATCH, orders)
    assert limited.status_code == 429, limited.text
    time.sleep(1.5)  # the cool-down the exchange asked for
    placed = _post(stack, "okx-main", OKX_BATCH, orders)
    assert placed.status_code == 200 and "x-proxy-idempotent-replay" not in placed.headers, placed.text
    assert [_held(stack, "okx-main", "clOrdId", o["clOrdId"]) for o in orders] == [1, 1]
