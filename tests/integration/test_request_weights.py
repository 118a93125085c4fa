"""Request weights as the exchange counts them (issue 12, case 9), through ``serve`` and the
strict Binance emulator: a trading-day ticker for 60 symbols costs 200 of the account's
budget, not 1, so a read-only bot cannot spend the shared IP's weight; the request over the
budget is refused (429 ``rate_limit.account``) and never sent."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

ACCOUNT = AccountSpec("binance-main", "binance", {"api_key": "weightKey0123456789", "api_secret": "w" * 64},
                      extra_toml="weight_per_minute = 300")
POLICY = 'version = 1\nclient = "reader"\n\n[[grants]]\naccount = "binance-main"\nallow = ["read"]\n'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("weights"), [ACCOUNT], {"reader": POLICY}) as s:
        yield s


def ticker(stack: Stack, path: str, names: list[str]) -> httpx.Response:
    return httpx.get(f"{stack.proxy_url}/x/binance-main{path}", params={"symbols": json.dumps(names)},
                     headers={"Proxy-Authorization": f"Bearer {stack.token('reader')}"}, timeout=10)


def sent(stack: Stack, path: str) -> int:
    return sum(1 for r in stack.emulator("binance-main").recorder.all() if r.path == path)


def test_request_weights_many_symbol_tickers_spend_the_documented_weight(stack: Stack) -> None:
    small = ticker(stack, "/api/v3/ticker/tradingDay", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])  # 3 x 4 = 12
    assert small.status_code == 200 and [t["symbol"] for t in small.json()] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    many = [f"X{i}USDT" for i in range(60)]
    heavy = ticker(stack, "/api/v3/ticker/tradingDay", many)  # capped at 200: 212 of 300 spent
    assert heavy.headers.get("x-proxy-error") is None and heavy.json()["code"] == -1121  # the exchange's answer
    over = ticker(stack, "/api/v3/ticker", many)  # 200 more would make 412
    assert over.status_code == 429 and proxy_error(over)["rule"] == "rate_limit.account", over.text
    assert sent(stack, "/api/v3/ticker/tradingDay") == 2 and sent(stack, "/api/v3/ticker") == 0
