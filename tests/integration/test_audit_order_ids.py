"""The audit's exchange_order_id is the id the exchange gave the order (issue 19): a ccxt bot
places orders on Deribit and Bitfinex through a real proxy and the strict emulators, and the
outcome record holds the id that ccxt itself parsed from the answer (Deribit's JSON-RPC request
id and Bitfinex's array answer used to give a wrong or no id)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ccxt
import pytest

from tests.support.stack import AccountSpec, Stack, start_stack

DERIBIT = {"api_key": "drbIntClient1", "api_secret": "deribit-integration-secret-0123456789"}
BITFINEX = {"api_key": "bitfinex-real-key-0123", "api_secret": "bitfinex-real-secret-0123456789"}
POLICY = """
version = 1
client = "ids-bot"

[[grants]]
account = "deribit-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTC-PERPETUAL"]
max_order_qty = "1000"
max_order_notional = "25000"

[[grants]]
account = "bitfinex-main"
allow = ["read", "trade", "cancel"]
symbols = ["tBTCUSD"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [AccountSpec("deribit-main", "deribit", DERIBIT),
                AccountSpec("bitfinex-main", "bitfinex", BITFINEX)]
    with start_stack(tmp_path_factory.mktemp("ids"), accounts, {"ids-bot": POLICY}) as s:
        yield s


def _headers(stack: Stack) -> dict[str, str]:
    return {"Proxy-Authorization": f"Bearer {stack.token('ids-bot')}"}


def _outcome(stack: Stack, request_id: str) -> dict[str, Any]:
    (record,) = [r for r in stack.audit_records()
                 if r["request_id"] == request_id and r["phase"] == "outcome"]
    return record


def test_audit_order_ids_are_the_exchanges_own(stack: Stack) -> None:
    deribit = ccxt.deribit({"apiKey": "placeholder", "secret": "placeholder",
                            "headers": _headers(stack)})
    deribit.urls["api"] = {"rest": stack.proxy_url + "/x/deribit-main"}
    deribit.load_markets()
    d_order = deribit.create_order("BTC/USD:BTC", "limit", "buy", 100, 30000, {"label": "ids1"})
    d_request = deribit.last_response_headers["x-proxy-request-id"]

    bitfinex = ccxt.bitfinex({"apiKey": "placeholder", "secret": "placeholder",
                              "enableRateLimit": False, "headers": _headers(stack)})
    url = stack.proxy_url + "/x/bitfinex-main"
    bitfinex.urls["api"] = {"v1": url, "public": url, "private": url}
    bitfinex.load_markets()
    b_order = bitfinex.create_order("BTC/USD", "limit", "sell", 0.01, 60000, {"clientOrderId": 9001})
    b_request = bitfinex.last_response_headers["x-proxy-request-id"]

    stack.stop_proxy()  # the outcome records are flushed at shutdown
    assert d_order["id"] and _outcome(stack, d_request)["exchange_order_id"] == d_order["id"]
    assert b_order["id"] and _outcome(stack, b_request)["exchange_order_id"] == b_order["id"]
