"""A ccxt bot with placeholder keys trades Deribit through a real proxy against the strict
emulator (per-request signature, 60 s window, single-use nonces); token, withdraw, transfer
and key endpoints are refused before they reach it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import ccxt
import httpx
import pytest

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

FIELDS = {"api_key": "drbIntClient1", "api_secret": "deribit-integration-secret-0123456789"}
POLICY = """
version = 1
client = "deribit-bot"

[[grants]]
account = "deribit-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTC-PERPETUAL"]
max_order_qty = "1000"
max_order_notional = "25000"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("deribit"),
                     [AccountSpec("deribit-main", "deribit", FIELDS)],
                     {"deribit-bot": POLICY}) as s:
        yield s


def _bot(stack: Stack) -> Any:
    bot = ccxt.deribit({"apiKey": "placeholder", "secret": "placeholder",
                        "headers": {"Proxy-Authorization": f"Bearer {stack.token('deribit-bot')}"}})
    bot.urls["api"] = {"rest": stack.proxy_url + "/x/deribit-main"}
    return bot


def test_deribit_ccxt_bot_reads_balance_places_and_cancels(stack: Stack) -> None:
    bot = _bot(stack)
    bot.load_markets()
    assert bot.fetch_balance()["BTC"]["total"] > 0
    order = bot.create_order("BTC/USD:BTC", "limit", "buy", 100, 30000, {"label": "intdrb1"})
    assert order["id"] in [o["id"] for o in bot.fetch_open_orders("BTC/USD:BTC")]
    bot.cancel_order(order["id"])
    assert bot.fetch_order(order["id"])["status"] == "canceled"
    received = stack.emulator("deribit-main").recorder.all()
    place = [r for r in received if r.path == "/api/v2/private/buy"][-1]
    assert place.accepted and parse_qs(place.query)["label"] == ["intdrb1"]
    auth = place.header("Authorization") or ""
    assert auth.startswith(f"deri-hmac-sha256 id={FIELDS['api_key']},")
    assert all(r.accepted for r in received)


def test_deribit_ccxt_bot_over_limit_order_refused(stack: Stack) -> None:
    bot = _bot(stack)
    bot.load_markets()
    before = len(stack.emulator("deribit-main").recorder.all())
    with pytest.raises(ccxt.BaseError):
        bot.create_order("BTC/USD:BTC", "limit", "buy", 5000, 30000, {"label": "intdrb2"})
    with pytest.raises(ccxt.BaseError):
        bot.create_order("ETH/USD:ETH", "limit", "buy", 1, 3000, {"label": "intdrb3"})
    assert len(stack.emulator("deribit-main").recorder.all()) == before


@pytest.mark.parametrize("path", [
    "/api/v2/public/auth?grant_type=client_credentials&client_id=x&client_secret=y",
    "/api/v2/private/withdraw?currency=BTC&address=x&amount=1",
    "/api/v2/private/submit_transfer_to_user?currency=BTC&amount=1&destination=x",
    "/api/v2/private/submit_transfer_to_subaccount?currency=BTC&amount=1&destination=1",
    "/api/v2/private/create_api_key?max_scope=account:read_write",
    "/api/v2/private/add_to_address_book?currency=BTC&type=withdrawal&address=x",
])
def test_deribit_ccxt_bot_dangerous_endpoints_never_reach_emulator(
    stack: Stack, path: str
) -> None:
    before = len(stack.emulator("deribit-main").recorder.all())
    r = httpx.get(stack.proxy_url + "/x/deribit-main" + path,
                  headers={"Proxy-Authorization": f"Bearer {stack.token('deribit-bot')}"})
    assert r.status_code == 403 and proxy_error(r)["code"] == "endpoint_forbidden"
    assert len(stack.emulator("deribit-main").recorder.all()) == before
