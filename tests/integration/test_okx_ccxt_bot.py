"""A ccxt bot with placeholder keys trades OKX through a real proxy against the strict
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

FIELDS = {"api_key": "okx-real-key-0123", "api_secret": "OKXREALSECRET0123456789ABCDEF",
          "passphrase": "RealPass1!"}
POLICY = """
version = 1
client = "okx-bot"

[[grants]]
account = "okx-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTC-USDT", "ETH-USDT"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("okx"),
                     [AccountSpec("okx-main", "okx", FIELDS)],
                     {"okx-bot": POLICY}) as s:
        yield s


def _bot(stack: Stack) -> Any:
    bot = ccxt.okx({"apiKey": "placeholder", "secret": "placeholder", "password": "placeholder",
                    "options": {"fetchMarkets": {"types": ["spot"]}},
                    "headers": {"Proxy-Authorization": f"Bearer {stack.token('okx-bot')}"}})
    bot.urls["api"] = {"rest": stack.proxy_url + "/x/okx-main"}
    return bot


def test_okx_ccxt_bot_reads_balance_places_and_cancels(stack: Stack) -> None:
    bot = _bot(stack)
    bot.load_markets()
    assert bot.fetch_balance()["USDT"]["total"] > 0
    order = bot.create_order("BTC/USDT", "limit", "buy", 0.01, 30000, {"clientOrderId": "intokx1"})
    assert order["clientOrderId"] == "intokx1"
    assert order["id"] in [o["id"] for o in bot.fetch_open_orders("BTC/USDT")]
    bot.cancel_order(order["id"], "BTC/USDT")
    assert bot.fetch_order(order["id"], "BTC/USDT")["status"] == "canceled"
    received = stack.emulator("okx-main").recorder.all()
    place = [r for r in received if r.path == "/api/v5/trade/batch-orders"][-1]
    assert place.accepted and place.header("OK-ACCESS-KEY") == FIELDS["api_key"]
    assert place.header("OK-ACCESS-PASSPHRASE") == FIELDS["passphrase"]
    assert [o["clOrdId"] for o in json.loads(place.body)] == ["intokx1"]


def test_okx_ccxt_bot_batch_with_one_order_over_policy_is_refused(stack: Stack) -> None:
    before = len(stack.emulator("okx-main").recorder.all())
    batch = [{"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit",
              "sz": sz, "px": "30000", "clOrdId": f"intokxb{i}"}
             for i, sz in enumerate(["0.1", "2"])]
    r = httpx.post(stack.proxy_url + "/x/okx-main/api/v5/trade/batch-orders",
                   headers={"Proxy-Authorization": f"Bearer {stack.token('okx-bot')}",
                            "Content-Type": "application/json"},
                   content=json.dumps(batch).encode())
    assert r.status_code == 403 and proxy_error(r)["code"] == "policy_denied"
    assert len(stack.emulator("okx-main").recorder.all()) == before


@pytest.mark.parametrize("path", ["/api/v5/asset/withdrawal", "/api/v5/asset/transfer",
                                  "/api/v5/asset/subaccount/transfer",
                                  "/api/v5/users/subaccount/apikey"])
def test_okx_ccxt_bot_dangerous_endpoints_never_reach_emulator(stack: Stack, path: str) -> None:
    before = len(stack.emulator("okx-main").recorder.all())
    r = httpx.post(stack.proxy_url + "/x/okx-main" + path,
                   headers={"Proxy-Authorization": f"Bearer {stack.token('okx-bot')}",
                            "Content-Type": "application/json"},
                   content=b'{"ccy":"BTC","amt":"1","dest":"4","toAddr":"x"}')
    assert r.status_code == 403 and proxy_error(r)["code"] == "endpoint_forbidden"
    assert len(stack.emulator("okx-main").recorder.all()) == before
