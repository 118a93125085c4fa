"""Private streams across two workers: many bots on one account's stream each see that
account's order; one bot on two accounts sees each account's order on that account's stream
only; a key rotation applies at the next stream login (an open stream keeps its login)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from proxy_devkit.emulator.bybit import BybitKey
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

KEYS = {"bybit-a": ("bybit_scale_key_a", "bybit-scale-secret-a"),
        "bybit-b": ("bybit_scale_key_b", "bybit-scale-secret-b"),
        "bybit-r": ("bybit_scale_key_r", "bybit-scale-secret-r"),
        "bybit-f": ("bybit_scale_key_f", "bybit-scale-secret-f")}
NEW_KEY, NEW_SECRET = "bybit_scale_key_r2", "bybit-scale-secret-r2"
BOTS = [f"bot-{i}" for i in range(6)]


def _policy(client: str, accounts: list[str]) -> str:
    grants = "".join(f'\n[[grants]]\naccount = "{a}"\nallow = ["read", "trade"]\n' for a in accounts)
    return f'version = 1\nclient = "{client}"\n{grants}'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [AccountSpec(name, "bybit", {"api_key": k, "api_secret": s}) for name, (k, s) in KEYS.items()]
    policies = {bot: _policy(bot, ["bybit-a"]) for bot in BOTS}
    policies["multi"] = _policy("multi", ["bybit-a", "bybit-b"])
    policies["rotor"] = _policy("rotor", ["bybit-r"])
    policies["faller"] = _policy("faller", ["bybit-f"])
    with start_stack(tmp_path_factory.mktemp("streams-scale"), accounts, policies, workers=2) as s:
        yield s


async def _open(session: aiohttp.ClientSession, stack: Stack, client: str, account: str) -> Any:
    """A bot's stream on ``account``, logged in (placeholder) and subscribed to its orders."""
    ws = await session.ws_connect(stack.proxy_url.replace("http://", "ws://") + f"/x/{account}/v5/private",
                                  headers={"Proxy-Authorization": f"Bearer {stack.token(client)}"})
    await ws.send_str('{"op": "auth", "args": ["placeholder", "1", "00"]}')
    await ws.send_str('{"op": "subscribe", "args": ["order"], "req_id": "s"}')
    while True:
        message = json.loads((await ws.receive(timeout=10)).data)
        if message.get("op") == "subscribe":
            assert message["success"] is True
            return ws


def _place(stack: Stack, client: str, account: str, link_id: str) -> str:
    body = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01",
            "price": "30000", "orderLinkId": link_id}
    r = httpx.post(stack.proxy_url + f"/x/{account}/v5/order/create", content=json.dumps(body).encode(),
                   headers={"Proxy-Authorization": f"Bearer {stack.token(client)}",
                            "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["retCode"] == 0, r.text
    return str(r.json()["result"]["orderId"])


async def _orders(ws: Any, want: int) -> list[str]:
    """The order ids pushed on ``ws`` until ``want`` of them arrived."""
    seen: list[str] = []
    while len(seen) < want:
        message = json.loads((await ws.receive(timeout=10)).data)
        if message.get("topic") == "order":
            seen += [o["orderId"] for o in message["data"]]
    return seen


def test_private_streams_many_bots_on_one_account_across_workers(stack: Stack) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            sockets = [await _open(session, stack, bot, "bybit-a") for bot in BOTS for _ in range(2)]
            order = await asyncio.to_thread(_place, stack, "bot-0", "bybit-a", "fanout1")
            seen = await asyncio.gather(*(_orders(ws, 1) for ws in sockets))
            assert seen == [[order]] * len(sockets)
            for ws in sockets:
                await ws.close()

    asyncio.run(run())
    # each bot stream (spread over the two workers by the kernel) logged in on its own
    logins = [m for m in stack.emulator("bybit-a").streams.received if m.get("op") == "auth"]
    assert len(logins) == 2 * len(BOTS) and {m["args"][0] for m in logins} == {KEYS["bybit-a"][0]}


def test_private_streams_one_bot_on_two_accounts_sees_each_accounts_own_orders(stack: Stack) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            on_a = [await _open(session, stack, "multi", "bybit-a") for _ in range(2)]
            on_b = [await _open(session, stack, "multi", "bybit-b") for _ in range(2)]
            order_a = await asyncio.to_thread(_place, stack, "multi", "bybit-a", "multia1")
            order_b = await asyncio.to_thread(_place, stack, "multi", "bybit-b", "multib1")
            assert await asyncio.gather(*(_orders(ws, 1) for ws in on_a)) == [[order_a]] * 2
            assert await asyncio.gather(*(_orders(ws, 1) for ws in on_b)) == [[order_b]] * 2
            for ws in on_a + on_b:
                await ws.close()

    asyncio.run(run())
    logins_b = [m for m in stack.emulator("bybit-b").streams.received if m.get("op") == "auth"]
    assert logins_b and {m["args"][0] for m in logins_b} == {KEYS["bybit-b"][0]}


def test_private_streams_key_rotation_applies_at_the_next_login(stack: Stack) -> None:
    emulator = stack.emulator("bybit-r")
    emulator.keys[NEW_KEY] = BybitKey(NEW_KEY, hmac_secret=NEW_SECRET)  # the operator adds the new key

    async def login_key() -> str:
        async with aiohttp.ClientSession() as session:
            ws = await _open(session, stack, "rotor", "bybit-r")
            await ws.close()
        return str([m for m in emulator.streams.received if m.get("op") == "auth"][-1]["args"][0])

    assert asyncio.run(login_key()) == KEYS["bybit-r"][0]

    async def held_open() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await _open(session, stack, "rotor", "bybit-r")
            rotated = stack.cli("keys", "rotate", "--account", "bybit-r",
                                stdin=json.dumps({"api_key": NEW_KEY, "api_secret": NEW_SECRET}))
            assert rotated.returncode == 0, rotated.stderr
            # new logins, on either worker, until both have reloaded (a deadline, not a timing claim)
            deadline, keys = time.monotonic() + 60, []
            while time.monotonic() < deadline:
                keys.append(await login_key())
                if keys[-4:] == [NEW_KEY] * 4:
                    break
                await asyncio.sleep(0.2)
            assert keys[-4:] == [NEW_KEY] * 4, keys[-8:]
            # the stream opened before the rotation keeps its login and still relays
            order = await asyncio.to_thread(_place, stack, "rotor", "bybit-r", "rotated1")
            assert await _orders(ws, 1) == [order]
            await ws.close()

    asyncio.run(held_open())


def test_private_streams_log_in_with_the_previous_key_while_the_exchange_refuses_the_new_one(
    stack: Stack,
) -> None:
    """A rotation to a key the exchange does not know: REST falls back to the previous version
    (issue 14), and so do new stream logins, instead of every stream being refused."""
    emulator = stack.emulator("bybit-f")
    unknown = {"api_key": "bybit_unknown_key_f", "api_secret": "bybit-unknown-secret-f"}
    rotated = stack.cli("keys", "rotate", "--account", "bybit-f", "--skip-exchange-check",
                        stdin=json.dumps(unknown))
    assert rotated.returncode == 0, rotated.stderr

    async def login() -> str | None:
        """The key of a new stream's login, or None when the stream was refused."""
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                stack.proxy_url.replace("http://", "ws://") + "/x/bybit-f/v5/private",
                headers={"Proxy-Authorization": f"Bearer {stack.token('faller')}"})
            await ws.send_str('{"op": "auth", "args": ["placeholder", "1", "00"], "req_id": "a"}')
            answer = await ws.receive(timeout=10)
            await ws.close()
        if answer.type is not aiohttp.WSMsgType.TEXT or not json.loads(answer.data).get("success"):
            return None
        return str([m for m in emulator.streams.received if m.get("op") == "auth"][-1]["args"][0])

    async def run() -> list[str | None]:
        # until both workers saw the exchange refuse the new key (a deadline, not a timing claim)
        deadline, keys = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            keys.append(await login())
            if keys[-4:] == [KEYS["bybit-f"][0]] * 4:
                break
            await asyncio.sleep(0.2)
        return keys

    keys = asyncio.run(run())
    assert keys[-4:] == [KEYS["bybit-f"][0]] * 4, keys[-8:]
    assert unknown["api_key"] not in [k for k in keys[-4:]]
