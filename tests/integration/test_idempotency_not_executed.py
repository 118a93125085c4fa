"""An order the exchange refused before executing it (429, 418) does not spend its client order
id: after the cool-down, the same order with the same id is placed, not answered with the old 429."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, start_stack

ACCOUNT = AccountSpec("binance-main", "binance", {"api_key": "notExecutedKey0123", "api_secret": "n" * 64})
POLICY = 'version = 1\nclient = "bot"\n\n[[grants]]\naccount = "binance-main"\nallow = ["read", "trade"]\n'
ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.001",
         "price": "50000", "newClientOrderId": "retry-after-429"}


def test_a_rate_limited_order_is_placed_by_its_retry_after_the_cool_down(tmp_path: Path) -> None:
    with start_stack(tmp_path, [ACCOUNT], {"bot": POLICY}) as stack:
        emulator = stack.emulator("binance-main")
        headers = {"Proxy-Authorization": f"Bearer {stack.token('bot')}"}

        def place() -> httpx.Response:
            return httpx.post(f"{stack.proxy_url}/x/binance-main/api/v3/order", data=ORDER,
                              headers=headers, timeout=15)

        emulator.rate_limit(429, retry_after="1")
        first = place()
        assert first.status_code == 429 and first.json()["code"] == -1003, first.text
        time.sleep(1.5)  # the cool-down the exchange asked for
        second = place()
        assert second.status_code == 200, second.text
        assert "x-proxy-idempotent-replay" not in second.headers
        placed = [r for r in emulator.recorder.all() if r.path == "/api/v3/order" and r.accepted]
        assert len(placed) == 1
        # from now on the id is spent: a third identical request replays the placement
        third = place()
        assert third.status_code == 200 and third.headers.get("x-proxy-idempotent-replay") == "true"
        assert third.content == second.content


BUDGET_POLICY = POLICY + '\n[[grants.budgets]]\nper = "client"\nwindow = "1m"\nmax_orders = 1\n'


def test_a_test_order_spends_neither_its_client_order_id_nor_the_budget(tmp_path: Path) -> None:
    """Binance's order/test validates without placing: policy applies, but the id and the
    order budget stay for the real order."""
    with start_stack(tmp_path, [ACCOUNT], {"bot": BUDGET_POLICY}) as stack:
        headers = {"Proxy-Authorization": f"Bearer {stack.token('bot')}"}
        order = {**ORDER, "newClientOrderId": "validated-first"}
        test = httpx.post(f"{stack.proxy_url}/x/binance-main/api/v3/order/test", data=order,
                          headers=headers, timeout=15)
        assert test.status_code == 200 and test.json() == {}, test.text
        real = httpx.post(f"{stack.proxy_url}/x/binance-main/api/v3/order", data=order,
                          headers=headers, timeout=15)
        assert real.status_code == 200 and real.json()["clientOrderId"] == "validated-first", real.text
        over = httpx.post(f"{stack.proxy_url}/x/binance-main/api/v3/order",
                          data={**ORDER, "newClientOrderId": "second-real"}, headers=headers, timeout=15)
        assert over.status_code == 429 and proxy_error(over)["rule"] == "budget.client.orders.1m"
