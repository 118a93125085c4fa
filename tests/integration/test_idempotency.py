"""Idempotent client order ids through the real proxy: one order per id, however retried."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.support.stack import AccountSpec, Stack, start_stack

POLICY = """
version = 1
client = "bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
"""
ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
         "quantity": "0.01", "price": "50000"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    acct = AccountSpec("binance-main", "binance", {"api_key": "idemKey0123456789", "api_secret": "x" * 64})
    with start_stack(tmp_path_factory.mktemp("idem"), [acct], {"bot": POLICY}, workers=2) as s:
        yield s


def _placed(stack: Stack, coid: str) -> int:
    return sum(
        1 for r in stack.emulator("binance-main").recorder.all()
        if r.method == "POST" and r.path == "/api/v3/order" and f"newClientOrderId={coid}" in r.body.decode()
    )


def test_idempotency_twenty_concurrent_identical_orders_place_one(stack: Stack) -> None:
    token = stack.token("bot")

    async def submit_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.proxy_url, timeout=30) as client:
            return await asyncio.gather(*(
                client.post("/x/binance-main/api/v3/order", data={**ORDER, "newClientOrderId": "idem-20"},
                            headers={"Proxy-Authorization": f"Bearer {token}"})
                for _ in range(20)
            ))

    responses = asyncio.run(submit_all())
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1, "every retry gets the first answer"
    assert _placed(stack, "idem-20") == 1
    assert sum(1 for r in responses if r.headers.get("x-proxy-idempotent-replay") == "true") == 19


def test_idempotency_same_id_different_content_is_a_conflict(stack: Stack) -> None:
    token = {"Proxy-Authorization": f"Bearer {stack.token('bot')}"}
    first = httpx.post(stack.proxy_url + "/x/binance-main/api/v3/order", headers=token,
                       data={**ORDER, "newClientOrderId": "idem-conflict"})
    assert first.status_code == 200
    second = httpx.post(stack.proxy_url + "/x/binance-main/api/v3/order", headers=token,
                        data={**ORDER, "price": "49000", "newClientOrderId": "idem-conflict"})
    assert second.status_code == 409 and second.headers["x-proxy-error"] == "idempotency_conflict"
    assert _placed(stack, "idem-conflict") == 1


def test_idempotency_replay_survives_a_proxy_restart(stack: Stack) -> None:
    token = {"Proxy-Authorization": f"Bearer {stack.token('bot')}"}
    first = httpx.post(stack.proxy_url + "/x/binance-main/api/v3/order", headers=token,
                       data={**ORDER, "newClientOrderId": "idem-restart"})
    stack.stop_proxy()
    stack.start_proxy(workers=2)
    stack.wait_ready()
    again = httpx.post(stack.proxy_url + "/x/binance-main/api/v3/order", headers=token,
                       data={**ORDER, "newClientOrderId": "idem-restart"})
    assert again.status_code == 200 and again.content == first.content
    assert _placed(stack, "idem-restart") == 1
