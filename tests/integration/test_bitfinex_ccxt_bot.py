"""A ccxt bot with placeholder keys trades Bitfinex through a real proxy against the strict
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

FIELDS = {"api_key": "bitfinex-real-key-0123", "api_secret": "bitfinex-real-secret-0123456789"}
POLICY = """
version = 1
client = "bitfinex-bot"

[[grants]]
account = "bitfinex-main"
allow = ["read", "trade", "cancel"]
symbols = ["tBTCUSD"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("bitfinex"),
                     [AccountSpec("bitfinex-main", "bitfinex", FIELDS)],
                     {"bitfinex-bot": POLICY}) as s:
        yield s


def _bot(stack: Stack) -> Any:
    auth = {"Proxy-Authorization": f"Bearer {stack.token('bitfinex-bot')}"}
    bot = ccxt.bitfinex({"apiKey": "placeholder", "secret": "placeholder",
                         "enableRateLimit": False, "headers": auth})
    url = stack.proxy_url + "/x/bitfinex-main"
    bot.urls["api"] = {"v1": url, "public": url, "private": url}
    return bot


def _post(stack: Stack, path: str, body: bytes) -> httpx.Response:
    return httpx.post(stack.proxy_url + "/x/bitfinex-main" + path,
                      headers={"Proxy-Authorization": f"Bearer {stack.token('bitfinex-bot')}",
                               "Content-Type": "application/json"}, content=body)


def test_bitfinex_ccxt_bot_reads_balance_places_and_cancels(stack: Stack) -> None:
    bot = _bot(stack)
    bot.load_markets()
    assert bot.fetch_balance()["USD"]["total"] > 0
    order = bot.create_order("BTC/USD", "limit", "sell", 0.01, 60000, {"clientOrderId": 8001})
    assert order["side"] == "sell" and order["clientOrderId"] == "8001"
    assert order["id"] in [o["id"] for o in bot.fetch_open_orders("BTC/USD")]
    bot.cancel_order(order["id"])
    assert bot.fetch_open_orders() == []
    received = stack.emulator("bitfinex-main").recorder.all()
    place = [r for r in received if r.path == "/v2/auth/w/order/submit"][-1]
    assert place.accepted and place.header("bfx-apikey") == FIELDS["api_key"]
    assert json.loads(place.body)["cid"] == 8001 and json.loads(place.body)["amount"] == "-0.01"
    assert all(r.accepted for r in received)


def test_bitfinex_ccxt_bot_order_over_policy_never_reaches_emulator(stack: Stack) -> None:
    before = len(stack.emulator("bitfinex-main").recorder.all())
    big = b'{"type":"EXCHANGE LIMIT","symbol":"tBTCUSD","amount":"-2","price":"60000"}'
    r = _post(stack, "/v2/auth/w/order/submit", big)
    assert r.status_code == 403 and proxy_error(r)["code"] == "policy_denied"
    batch = (b'{"ops":[["on",{"type":"EXCHANGE LIMIT","symbol":"tBTCUSD","amount":"0.1",'
             b'"price":"60000"}],["on",{"type":"EXCHANGE LIMIT","symbol":"tBTCUSD",'
             b'"amount":"-1","price":"60000"}]]}')
    r = _post(stack, "/v2/auth/w/order/multi", batch)
    assert r.status_code == 403 and proxy_error(r)["code"] == "policy_denied"
    assert len(stack.emulator("bitfinex-main").recorder.all()) == before


@pytest.mark.parametrize("path", ["/v2/auth/w/withdraw", "/v2/auth/w/transfer",
                                  "/v2/auth/w/ext/wallets/withdrawals/request",
                                  "/v2/auth/w/token", "/v2/auth/w/deposit/address"])
def test_bitfinex_ccxt_bot_dangerous_endpoints_never_reach_emulator(
    stack: Stack, path: str
) -> None:
    before = len(stack.emulator("bitfinex-main").recorder.all())
    r = _post(stack, path, b'{"wallet":"exchange","method":"bitcoin","amount":"1","address":"x"}')
    assert r.status_code == 403 and proxy_error(r)["code"] == "endpoint_forbidden"
    assert len(stack.emulator("bitfinex-main").recorder.all()) == before
