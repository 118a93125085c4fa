"""The proxy's own exchange calls cannot be turned against the account (issue 12, case 8),
through ``serve --workers 2`` and the strict Binance emulator: orders refused by a static rule
make no ticker call at all; failing lookups are cached, so 30 refused orders make at most one
ticker call per symbol per failure period for the whole proxy; a successful price is fetched
once per cache period whatever bots send; every lookup is charged to the account's weight
budget, and a lookup over it is refused (429 ``rate_limit.account``) without calling."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from proxy.guards.prices import DEFAULT_TTL_S, FAILURE_TTL_S
from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

MAIN = AccountSpec("binance-main", "binance", {"api_key": "refKey0123456789", "api_secret": "r" * 64})
# weight 4 a minute: one order (1) and its lookup (ticker/price with symbol: 2), then no room
# for a second lookup (2)
TIGHT = AccountSpec("binance-tight", "binance", {"api_key": "tightKey0123456789", "api_secret": "t" * 64},
                    extra_toml="weight_per_minute = 4")
GRANT = """
[[grants]]
account = "{account}"
allow = ["read", "trade", "cancel"]
symbols = [{symbols}]
price_band = "2%"
"""
POLICY = 'version = 1\nclient = "mm"\n' + GRANT.format(account="binance-main", symbols='"BTCUSDT", "DOGEUSDT"')
PRICES = {"BTCUSDT": "50000", "ETHUSDT": "3000", "SOLUSDT": "150", "DOGEUSDT": "0.1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("refprice-calls"), [MAIN], {"mm": POLICY}, workers=2) as s:
        yield s


def order(stack: Stack, symbol: str, account: str = "binance-main") -> httpx.Response:
    data = {"symbol": symbol, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1",
            "price": PRICES[symbol]}
    return httpx.post(f"{stack.proxy_url}/x/{account}/api/v3/order", data=data, timeout=10,
                      headers={"Proxy-Authorization": f"Bearer {stack.token('mm')}"})


def ticker_calls(stack: Stack, symbol: str, account: str = "binance-main") -> int:
    return sum(1 for r in stack.emulator(account).recorder.all()
               if r.path == "/api/v3/ticker/price" and f"symbol={symbol}" in r.query)


def burst(stack: Stack, symbol: str, n: int = 30) -> tuple[list[httpx.Response], float]:
    """``n`` orders from 6 concurrent bots (both workers answer); (answers, seconds taken)."""
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: order(stack, symbol), range(n)))
    return answers, time.monotonic() - started


def test_reference_price_refused_by_a_static_rule_calls_nothing(stack: Stack) -> None:
    answers, _ = burst(stack, "SOLUSDT")
    assert all(a.status_code == 403 and proxy_error(a)["rule"] == "symbols" for a in answers)
    assert ticker_calls(stack, "SOLUSDT") == 0


def test_reference_price_failures_are_cached_for_every_worker(stack: Stack) -> None:
    """DOGEUSDT is granted but unknown to the exchange: its ticker answers 400. Thirty refused
    orders make at most one call per failure period (plus one for the period in progress)."""
    answers, took = burst(stack, "DOGEUSDT")
    assert all(a.status_code == 403 and proxy_error(a)["rule"] == "price_band" for a in answers)
    calls = ticker_calls(stack, "DOGEUSDT")
    assert 1 <= calls <= math.ceil(took / FAILURE_TTL_S) + 1, (calls, took)


def test_reference_price_fetched_once_per_cache_period(stack: Stack) -> None:
    answers, took = burst(stack, "BTCUSDT")
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    calls = ticker_calls(stack, "BTCUSDT")
    assert 1 <= calls <= math.ceil(took / DEFAULT_TTL_S) + 1, (calls, took)


def test_reference_price_lookups_are_charged_to_the_weight_budget(tmp_path: Path) -> None:
    """Its own stack: Binance counts weight per IP, so accounts on one host share a budget."""
    policy = 'version = 1\nclient = "mm"\n' + GRANT.format(account="binance-tight", symbols='"BTCUSDT", "ETHUSDT"')
    with start_stack(tmp_path, [TIGHT], {"mm": policy}) as stack:
        first = order(stack, "BTCUSDT", "binance-tight")
        assert first.status_code == 200, first.text  # lookup 2 + order 1 of the budget's 4
        over = order(stack, "ETHUSDT", "binance-tight")
        assert over.status_code == 429 and proxy_error(over)["rule"] == "rate_limit.account", over.text
        assert "retry-after" in over.headers
        assert ticker_calls(stack, "ETHUSDT", "binance-tight") == 0
