"""A ccxt bot with placeholder keys trades Coinbase Advanced Trade through a real proxy against
the strict emulator (which verifies the proxy's JWT, its ``uri`` host and single-use nonce);
dangerous endpoints are refused before they reach it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ccxt
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

KEY_NAME = "organizations/org-int/apiKeys/key-int"
PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption()).decode()
FIELDS = {"api_key": KEY_NAME, "api_secret": PEM}
POLICY = """
version = 1
client = "coinbase-bot"

[[grants]]
account = "coinbase-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTC-USD", "ETH-USD"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("coinbase"),
                     [AccountSpec("coinbase-main", "coinbase", FIELDS)],
                     {"coinbase-bot": POLICY}) as s:
        yield s


def _bot(stack: Stack) -> Any:
    auth = {"Proxy-Authorization": f"Bearer {stack.token('coinbase-bot')}"}
    bot = ccxt.coinbase({"apiKey": "placeholder", "secret": "placeholder", "headers": auth})
    bot.urls["api"] = {"rest": stack.proxy_url + "/x/coinbase-main"}
    return bot


def test_coinbase_ccxt_bot_reads_balance_places_and_cancels(stack: Stack) -> None:
    bot = _bot(stack)
    bot.load_markets()
    assert bot.fetch_balance()["USD"]["total"] > 0
    order = bot.create_order("BTC/USD", "limit", "buy", 0.01, 30000,
                             {"client_order_id": "intcb1"})
    assert order["id"] in [o["id"] for o in bot.fetch_open_orders("BTC/USD")]
    bot.cancel_order(order["id"], "BTC/USD")
    assert bot.fetch_order(order["id"], "BTC/USD")["status"] == "canceled"
    received = stack.emulator("coinbase-main").recorder.all()
    place = [r for r in received if r.path == "/api/v3/brokerage/orders"][-1]
    assert place.accepted and json.loads(place.body)["client_order_id"] == "intcb1"
    token = (place.header("Authorization") or "").removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == KEY_NAME and claims["uri"].startswith("POST 127.0.0.1:")
    assert all(r.header("CB-ACCESS-KEY") is None for r in received)


def test_coinbase_ccxt_bot_over_limit_order_refused(stack: Stack) -> None:
    bot = _bot(stack)
    bot.load_markets()
    before = len(stack.emulator("coinbase-main").recorder.all())
    with pytest.raises(ccxt.BaseError):
        bot.create_order("BTC/USD", "limit", "buy", 2, 30000, {"client_order_id": "intcb2"})
    with pytest.raises(ccxt.BaseError):
        bot.create_order("SOL/USD", "limit", "buy", 0.1, 100, {"client_order_id": "intcb3"})
    assert len(stack.emulator("coinbase-main").recorder.all()) == before


@pytest.mark.parametrize("path", [
    "/v2/accounts/abc/transactions", "/v2/accounts/abc/withdrawals",
    "/api/v3/brokerage/portfolios/move_funds", "/api/v3/brokerage/portfolios",
])
def test_coinbase_ccxt_bot_dangerous_endpoints_never_reach_emulator(
    stack: Stack, path: str
) -> None:
    before = len(stack.emulator("coinbase-main").recorder.all())
    r = httpx.post(stack.proxy_url + "/x/coinbase-main" + path,
                   headers={"Proxy-Authorization": f"Bearer {stack.token('coinbase-bot')}",
                            "Content-Type": "application/json"},
                   content=b'{"type":"send","to":"x","amount":"1","currency":"BTC"}')
    assert r.status_code == 403 and proxy_error(r)["code"] == "endpoint_forbidden"
    assert len(stack.emulator("coinbase-main").recorder.all()) == before
