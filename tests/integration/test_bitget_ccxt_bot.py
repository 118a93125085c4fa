"""A ccxt bot with placeholder keys trades Bitget through a real proxy against the strict
emulator; dangerous endpoints are refused before they reach it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ccxt
import httpx
import pytest

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

FIELDS = {"api_key": "bg_real_key_0123", "api_secret": "bg-real-secret-0123456789abcdef",
          "passphrase": "RealPass1"}
POLICY = """
version = 1
client = "bitget-bot"

[[grants]]
account = "bitget-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT", "ETHUSDT"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("bitget"),
                     [AccountSpec("bitget-main", "bitget", FIELDS)],
                     {"bitget-bot": POLICY}) as s:
        yield s


def _bot(stack: Stack) -> Any:
    bot = ccxt.bitget({"apiKey": "placeholder", "secret": "placeholder",
                       "password": "placeholder",
                       "headers": {"Proxy-Authorization": f"Bearer {stack.token('bitget-bot')}"}})
    bot.urls["api"] = {k: stack.proxy_url + "/x/bitget-main" for k in bot.urls["api"]}
    return bot


def test_bitget_ccxt_bot_reads_balance_places_and_cancels(stack: Stack) -> None:
    bot = _bot(stack)
    bot.load_markets()
    assert bot.fetch_balance()["USDT"]["free"] > 0
    order = bot.create_order("BTC/USDT", "limit", "buy", 0.01, 30000,
                             {"clientOrderId": "int-bg-1"})
    assert order["clientOrderId"] == "int-bg-1"
    assert order["id"] in [o["id"] for o in bot.fetch_open_orders("BTC/USDT")]
    bot.cancel_order(order["id"], "BTC/USDT")
    assert bot.fetch_order(order["id"], "BTC/USDT")["status"] == "canceled"
    received = stack.emulator("bitget-main").recorder.all()
    place = [r for r in received if r.path == "/api/v2/spot/trade/place-order"][-1]
    assert place.accepted and place.header("ACCESS-KEY") == FIELDS["api_key"]
    assert place.header("X-CHANNEL-API-CODE") is None  # ccxt's broker header is not forwarded


@pytest.mark.parametrize("path", ["/api/v2/spot/wallet/withdrawal",
                                  "/api/v2/spot/wallet/transfer",
                                  "/api/v2/user/create-virtual-subaccount-apikey"])
def test_bitget_ccxt_bot_dangerous_endpoints_never_reach_emulator(stack: Stack, path: str) -> None:
    before = len(stack.emulator("bitget-main").recorder.all())
    r = httpx.post(stack.proxy_url + "/x/bitget-main" + path,
                   headers={"Proxy-Authorization": f"Bearer {stack.token('bitget-bot')}",
                            "Content-Type": "application/json"},
                   content=b'{"coin":"BTC","size":"1","address":"x","transferType":"on_chain"}')
    assert r.status_code == 403 and proxy_error(r)["code"] == "endpoint_forbidden"
    assert len(stack.emulator("bitget-main").recorder.all()) == before
