"""A ccxt bot with placeholder keys trades Kraken through a real proxy against the strict
emulator; dangerous endpoints are refused before they reach it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import ccxt
import httpx
import pytest

from tests.support.stack import AccountSpec, Stack, start_stack

FIELDS = {"api_key": "kraken-real-key-0123",
          "api_secret": base64.b64encode(b"kraken-real-secret-" * 4).decode()}
POLICY = """
version = 1
client = "kraken-bot"

[[grants]]
account = "kraken-main"
allow = ["read", "trade", "cancel"]
symbols = ["XXBTZUSD"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("kraken"),
                     [AccountSpec("kraken-main", "kraken", FIELDS)],
                     {"kraken-bot": POLICY}) as s:
        yield s


def _bot(stack: Stack) -> Any:
    bot = ccxt.kraken({"apiKey": "placeholder", "secret": base64.b64encode(b"x" * 64).decode(),
                       "enableRateLimit": False,
                       "headers": {"Proxy-Authorization": f"Bearer {stack.token('kraken-bot')}"}})
    bot.urls["api"] = {"public": stack.proxy_url + "/x/kraken-main",
                       "private": stack.proxy_url + "/x/kraken-main"}
    return bot


def test_kraken_ccxt_bot_reads_balance_places_and_cancels(stack: Stack) -> None:
    bot = _bot(stack)
    bot.load_markets()
    assert bot.fetch_balance()["USD"]["total"] > 0
    order = bot.create_order("BTC/USD", "limit", "buy", 0.01, 30000, {"clientOrderId": "intkr1"})
    assert order["id"] in [o["id"] for o in bot.fetch_open_orders("BTC/USD")]
    bot.cancel_order(order["id"])
    assert bot.fetch_order(order["id"])["status"] == "canceled"
    received = stack.emulator("kraken-main").recorder.all()
    place = [r for r in received if r.path == "/0/private/AddOrder"][-1]
    assert place.accepted and place.header("API-Key") == FIELDS["api_key"]
    assert dict(parse_qsl(place.body.decode()))["cl_ord_id"] == "intkr1"
    assert all(r.accepted for r in received)


def test_kraken_ccxt_bot_order_over_policy_never_reaches_emulator(stack: Stack) -> None:
    # (ccxt's kraken error handler indexes the proxy's error object as a list and raises
    # KeyError, so this goes through httpx to read the contract's body)
    before = len(stack.emulator("kraken-main").recorder.all())
    r = httpx.post(stack.proxy_url + "/x/kraken-main/0/private/AddOrder",
                   headers={"Proxy-Authorization": f"Bearer {stack.token('kraken-bot')}",
                            "Content-Type": "application/x-www-form-urlencoded"},
                   content=b"pair=XXBTZUSD&type=buy&ordertype=limit&volume=2&price=30000")
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy_denied"
    alias = httpx.post(stack.proxy_url + "/x/kraken-main/0/private/AddOrder",
                       headers={"Proxy-Authorization": f"Bearer {stack.token('kraken-bot')}",
                                "Content-Type": "application/x-www-form-urlencoded"},
                       content=b"pair=XBTUSD&type=buy&ordertype=limit&volume=2&price=30000")
    # XBTUSD is the granted XXBTZUSD's altname: one market, so the cap holds under either name
    assert alias.status_code == 403 and alias.json()["error"]["rule"] == "max_order_qty"
    assert len(stack.emulator("kraken-main").recorder.all()) == before


@pytest.mark.parametrize("method", ["Withdraw", "WalletTransfer", "WithdrawAddresses",
                                    "AccountTransfer", "GetWebSocketsToken", "GetApiKeyInfo"])
def test_kraken_ccxt_bot_dangerous_endpoints_never_reach_emulator(
    stack: Stack, method: str
) -> None:
    before = len(stack.emulator("kraken-main").recorder.all())
    r = httpx.post(stack.proxy_url + "/x/kraken-main/0/private/" + method,
                   headers={"Proxy-Authorization": f"Bearer {stack.token('kraken-bot')}",
                            "Content-Type": "application/x-www-form-urlencoded"},
                   content=b"nonce=1&asset=XBT&key=home&amount=1")
    assert r.status_code == 403 and r.json()["error"]["code"] == "endpoint_forbidden"
    assert len(stack.emulator("kraken-main").recorder.all()) == before
