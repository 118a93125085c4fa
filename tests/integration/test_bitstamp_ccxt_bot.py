"""A ccxt bot with placeholder keys trades Bitstamp through a real proxy against the strict
emulator (which checks the signature names its own host); dangerous endpoints never reach it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import ccxt
import httpx
import pytest

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

FIELDS = {"api_key": "bitstampRealKey0123456789abcdef", "api_secret": "bitstamp-real-secret-0123"}
# No `symbols` list: Bitstamp cancels by order id (cancel_order/ names no pair), and a grant
# that lists symbols refuses a cancel that names none.
POLICY = """
version = 1
client = "bitstamp-bot"

[[grants]]
account = "bitstamp-main"
allow = ["read", "trade", "cancel"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("bitstamp"),
                     [AccountSpec("bitstamp-main", "bitstamp", FIELDS)],
                     {"bitstamp-bot": POLICY}) as s:
        yield s


def _bot(stack: Stack) -> Any:
    bot = ccxt.bitstamp({"apiKey": "placeholder", "secret": "placeholder", "headers": {
        "Proxy-Authorization": f"Bearer {stack.token('bitstamp-bot')}"}})
    base = stack.proxy_url + "/x/bitstamp-main/api"
    bot.urls["api"] = {"public": base, "private": base}
    return bot


def test_bitstamp_ccxt_bot_reads_balance_places_and_cancels(stack: Stack) -> None:
    bot = _bot(stack)
    bot.load_markets()
    assert bot.fetch_balance()["USD"]["free"] > 0
    order = bot.create_order("BTC/USD", "limit", "buy", 0.01, 30000,
                             {"client_order_id": "int-bs-1"})
    assert order["id"] in [o["id"] for o in bot.fetch_open_orders()]
    bot.cancel_order(order["id"])
    assert bot.fetch_order(order["id"])["status"] == "canceled"
    received = stack.emulator("bitstamp-main").recorder.all()
    place = [r for r in received if r.path == "/api/v2/buy/btcusd/"][-1]
    assert place.accepted and place.header("X-Auth") == f"BITSTAMP {FIELDS['api_key']}"


@pytest.mark.parametrize("path", ["/api/v2/btc_withdrawal/", "/api/v2/withdrawal/open/",
                                  "/api/v2/transfer-from-main/", "/api/v2/revoke_all_api_keys/"])
def test_bitstamp_ccxt_bot_dangerous_endpoints_never_reach_emulator(
    stack: Stack, path: str
) -> None:
    before = len(stack.emulator("bitstamp-main").recorder.all())
    r = httpx.post(stack.proxy_url + "/x/bitstamp-main" + path,
                   headers={"Proxy-Authorization": f"Bearer {stack.token('bitstamp-bot')}"},
                   data={"amount": "1", "address": "x"})
    assert r.status_code == 403 and proxy_error(r)["code"] == "endpoint_forbidden"
    assert len(stack.emulator("bitstamp-main").recorder.all()) == before


def test_bitstamp_bot_websocket_token_is_a_placeholder_answered_by_the_proxy(stack: Stack) -> None:
    """ccxt asks websockets_token before subscribing: the proxy answers in Bitstamp's shape with a
    token that opens nothing (and user id 0), and the exchange never sees the request."""
    bot = _bot(stack)
    before = len(stack.emulator("bitstamp-main").recorder.all())
    answer = bot.privatePostWebsocketsToken()
    assert answer["user_id"] == 0 and answer["token"] not in stack.emulator("bitstamp-main").ws_tokens
    assert len(stack.emulator("bitstamp-main").recorder.all()) == before


def test_bitstamp_stream_token_refreshed_when_the_exchange_says_it_is_stale(stack: Stack) -> None:
    """The proxy's own token is used within the validity the exchange states: a subscription
    made after half of it gets a freshly fetched token (here the exchange states 0 s)."""
    emulator = stack.emulator("bitstamp-main")

    def fetches() -> int:
        return sum(r.path == "/api/v2/websockets_token/" for r in emulator.recorder.all())

    async def run() -> list[dict[str, Any]]:
        url = stack.proxy_url.replace("http://", "ws://") + "/x/bitstamp-main/"
        async with aiohttp.ClientSession() as session, session.ws_connect(
                url, headers={"Proxy-Authorization": f"Bearer {stack.token('bitstamp-bot')}"}) as ws:
            answers = []
            for pair in ("btcusd", "ethusd"):
                await ws.send_str(json.dumps({"event": "bts:subscribe", "data": {
                    "channel": f"private-my_orders_{pair}-0", "auth": "x"}}))
                answers.append(json.loads((await ws.receive(timeout=10)).data))
            return answers

    before = fetches()
    emulator.ws_token_valid_sec = 0
    try:
        answers = asyncio.run(run())
    finally:
        emulator.ws_token_valid_sec = 60
    assert [a["event"] for a in answers] == ["bts:subscription_succeeded"] * 2
    assert fetches() - before == 3  # at the open, then before each subscription
