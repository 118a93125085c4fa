"""A ccxt bot with placeholder keys trades Bybit through a real proxy against the strict
emulator; dangerous endpoints are refused before they reach it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ccxt
import httpx
import pytest

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

FIELDS = {"api_key": "bybit_real_key_0123", "api_secret": "bybit-real-secret-0123456789abcdef"}
POLICY = """
version = 1
client = "bybit-bot"

[[grants]]
account = "bybit-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT", "ETHUSDT"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("bybit"),
                     [AccountSpec("bybit-main", "bybit", FIELDS)],
                     {"bybit-bot": POLICY}) as s:
        yield s


def _bot(stack: Stack) -> Any:
    bot = ccxt.bybit({"apiKey": "placeholder", "secret": "placeholder",
                      "options": {"fetchMarkets": {"types": ["spot"]}},
                      "headers": {"Proxy-Authorization": f"Bearer {stack.token('bybit-bot')}"}})
    bot.urls["api"] = {k: stack.proxy_url + "/x/bybit-main" for k in bot.urls["api"]}
    return bot


def test_bybit_ccxt_bot_reads_balance_places_and_cancels(stack: Stack) -> None:
    bot = _bot(stack)
    bot.load_markets()
    assert bot.fetch_balance()["USDT"]["total"] > 0
    order = bot.create_order("BTC/USDT", "limit", "buy", 0.01, 30000,
                             {"clientOrderId": "int-bybit-1"})
    assert order["clientOrderId"] == "int-bybit-1"
    assert order["id"] in [o["id"] for o in bot.fetch_open_orders("BTC/USDT")]
    bot.cancel_order(order["id"], "BTC/USDT")
    assert bot.fetch_order(order["id"], "BTC/USDT", {"acknowledged": True})["status"] == "canceled"
    received = stack.emulator("bybit-main").recorder.all()
    place = [r for r in received if r.path == "/v5/order/create"][-1]
    assert place.accepted and place.header("X-BAPI-API-KEY") == FIELDS["api_key"]
    assert json.loads(place.body)["orderLinkId"] == "int-bybit-1"
    assert place.header("Referer") is None  # ccxt's broker header is not forwarded


@pytest.mark.parametrize("path", ["/v5/asset/withdraw/create",
                                  "/v5/asset/transfer/inter-transfer",
                                  "/v5/asset/transfer/universal-transfer",
                                  "/v5/user/create-sub-api", "/v5/user/update-api"])
def test_bybit_ccxt_bot_dangerous_endpoints_never_reach_emulator(stack: Stack, path: str) -> None:
    before = len(stack.emulator("bybit-main").recorder.all())
    r = httpx.post(stack.proxy_url + "/x/bybit-main" + path,
                   headers={"Proxy-Authorization": f"Bearer {stack.token('bybit-bot')}",
                            "Content-Type": "application/json"},
                   content=b'{"coin":"BTC","chain":"BTC","address":"x","amount":"1"}')
    assert r.status_code == 403 and proxy_error(r)["code"] == "endpoint_forbidden"
    assert len(stack.emulator("bybit-main").recorder.all()) == before
