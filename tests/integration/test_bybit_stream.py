"""Bybit's private stream through the proxy: a ccxt pro bot with placeholder keys watches its
orders while it trades over REST through the proxy; its own login never reaches the exchange,
acting or unknown messages are refused in Bybit's format, and no secret reaches the bot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import ccxt.pro
import pytest

from proxy.audit.reader import iter_records
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

CANARY = "bybit-stream-canary-secret-5f3a9c"
FIELDS = {"api_key": "bybit_stream_key_01", "api_secret": CANARY}
POLICY = """
version = 1
client = "stream-bot"

[[grants]]
account = "bybit-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT"]
max_order_qty = "0.5"
"""
WRITE_ONLY = """
version = 1
client = "no-read-bot"

[[grants]]
account = "bybit-main"
allow = ["cancel"]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("bybit-stream"), [AccountSpec("bybit-main", "bybit", FIELDS)],
                     {"stream-bot": POLICY, "no-read-bot": WRITE_ONLY}) as s:
        yield s


def _ws_url(stack: Stack) -> str:
    return stack.proxy_url.replace("http://", "ws://") + "/x/bybit-main/v5/private"


def _bot(stack: Stack) -> Any:
    token = stack.token("stream-bot")
    bot = ccxt.pro.bybit({"apiKey": "placeholder", "secret": "placeholder",
                          "options": {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot",
                                      "ws": {"options": {"headers": {"Proxy-Authorization": f"Bearer {token}"}}}},
                          "headers": {"Proxy-Authorization": f"Bearer {token}"}})
    rest = stack.proxy_url + "/x/bybit-main"
    bot.urls["api"]["rest"] = {k: rest for k in ("spot", "futures", "v2", "public", "private")}
    for key in list(bot.urls["api"]):
        if key != "ws" and isinstance(bot.urls["api"][key], str):
            bot.urls["api"][key] = rest
    private = bot.urls["api"]["ws"]["private"]
    private["spot"] = {"unified": _ws_url(stack), "nonUnified": _ws_url(stack)}
    private["contract"] = _ws_url(stack)
    return bot


def test_bybit_stream_ccxt_bot_sees_its_rest_order_on_watch_orders(stack: Stack) -> None:
    async def run() -> None:
        bot = _bot(stack)
        try:
            await bot.load_markets()
            watching = asyncio.create_task(bot.watch_orders("BTC/USDT"))
            await asyncio.sleep(0)
            for _ in range(100):  # until the proxy has relayed the subscription
                if any(isinstance(m, dict) and m.get("op") == "subscribe"
                       for m in stack.emulator("bybit-main").streams.received):
                    break
                await asyncio.sleep(0.05)
            order = await bot.create_order("BTC/USDT", "limit", "buy", 0.01, 30000,
                                           {"clientOrderId": "stream-order-1"})
            seen = await asyncio.wait_for(watching, 20)
            assert [o["id"] for o in seen] == [order["id"]]
            assert seen[0]["clientOrderId"] == "stream-order-1" and seen[0]["status"] == "open"
        finally:
            await bot.close()

    asyncio.run(run())
    received = stack.emulator("bybit-main").streams.received
    logins = [m for m in received if isinstance(m, dict) and m.get("op") == "auth"]
    assert logins and all(m["args"][0] == FIELDS["api_key"] for m in logins)  # the proxy's, never the bot's


async def _session(stack: Stack, client: str = "stream-bot") -> tuple[aiohttp.ClientSession, Any]:
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(_ws_url(stack), headers={"Proxy-Authorization": f"Bearer {stack.token(client)}"})
    return session, ws


def test_bybit_stream_bot_login_answered_by_proxy_acting_messages_refused(stack: Stack) -> None:
    async def run() -> list[dict[str, Any]]:
        session, ws = await _session(stack)
        answers = []
        try:
            for message in (
                {"op": "auth", "args": ["placeholder", "9999999999999", "0" * 64], "req_id": "a1"},
                {"op": "order.create", "args": [{"symbol": "BTCUSDT", "side": "Buy", "qty": "1"}], "req_id": "o1"},
                {"op": "subscribe", "args": ["publicTrade.BTCUSDT"], "req_id": "s1"},
                {"op": "subscribe", "args": ["order"], "req_id": "s2"},
                {"op": "ping", "req_id": "p1"},
            ):
                await ws.send_str(json.dumps(message))
                answers.append(json.loads((await ws.receive(timeout=10)).data))
        finally:
            await ws.close()
            await session.close()
        return answers

    before = len(stack.emulator("bybit-main").streams.received)
    auth, order, public, private, pong = asyncio.run(run())
    assert auth["success"] is True and auth["op"] == "auth" and auth["req_id"] == "a1"
    assert order["success"] is False and "endpoint_forbidden" in order["ret_msg"] and order["req_id"] == "o1"
    assert public["success"] is False and "endpoint_forbidden" in public["ret_msg"]
    assert private["success"] is True and private["op"] == "subscribe" and private["req_id"] == "s2"
    assert pong["ret_msg"] == "pong" and pong["req_id"] == "p1"
    sent = [m for m in stack.emulator("bybit-main").streams.received[before:] if isinstance(m, dict)]
    assert [m["op"] for m in sent] == ["auth", "subscribe", "ping"]  # the proxy's login, then the allowed ones
    assert sent[0]["args"][0] == FIELDS["api_key"] and sent[1]["args"] == ["order"]
    records = [r for r in iter_records(stack.dir / "audit") if r.get("account") == "bybit-main"
               and str(r.get("method", "")).startswith("WS")]
    rules = {(r["decision"], r["rule"]) for r in records}
    assert {("allow", "stream.open"), ("allow", "stream.subscribe"), ("deny", "endpoint_forbidden")} <= rules
    assert any(r["rule"] == "stream.close" for r in records)


def test_bybit_stream_upgrade_refused_with_contract_codes(stack: Stack) -> None:
    async def status(url: str, headers: dict[str, str]) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url, headers=headers):
                    return 101, ""
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status, str(exc.headers.get("X-Proxy-Error") if exc.headers else "")

    bad = asyncio.run(status(_ws_url(stack), {"Proxy-Authorization": "Bearer nope"}))
    no_read = asyncio.run(status(_ws_url(stack), {"Proxy-Authorization": f"Bearer {stack.token('no-read-bot')}"}))
    wrong_path = asyncio.run(status(_ws_url(stack).replace("/v5/private", "/v5/trade"),
                                    {"Proxy-Authorization": f"Bearer {stack.token('stream-bot')}"}))
    assert bad == (401, "unauthenticated")
    assert no_read == (403, "policy_denied")
    assert wrong_path == (403, "endpoint_forbidden")


def test_bybit_stream_never_shows_the_secret_to_the_bot(stack: Stack) -> None:
    async def run() -> list[str]:
        session, ws = await _session(stack)
        texts = []
        try:
            await ws.send_str(json.dumps({"op": "auth", "args": ["x", "1", "y"]}))
            await ws.send_str(json.dumps({"op": "subscribe", "args": ["order", "wallet"]}))
            for _ in range(2):
                texts.append(str((await ws.receive(timeout=10)).data))
        finally:
            await ws.close()
            await session.close()
        return texts

    texts = asyncio.run(run())
    assert texts and all(CANARY not in t and FIELDS["api_key"] not in t for t in texts)
