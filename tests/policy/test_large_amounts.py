"""Issue 14, case 3: a notional of 1e10 or more under a large budget was a 503 internal
error (the 10**-18 quantum needs more than Decimal's default 28 digits). It is charged
exactly, and refused by the budget's own rule when over."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from proxy.exchanges.binance import EXCHANGE as BINANCE
from proxy.model.request import Inbound
from proxy.policy.evaluate import evaluate
from proxy.policy.loader import parse_file
from proxy.policy.model import PolicySet
from proxy.policy.runtime import PolicyRuntime
from proxy.state import open_store

POLICY = """
version = 1
client = "bot"

[[grants]]
account = "main"
allow = ["read", "trade", "cancel"]
max_order_notional = "99999999999999999999"

[[grants.budgets]]
per = "client"
window = "1m"
max_notional = "{budget}"
"""


def _order(quantity: str, price: str) -> Inbound:
    return Inbound("POST", "/api/v3/order", b"", (("content-type", "application/x-www-form-urlencoded"),),
                   f"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity={quantity}&price={price}"
                   .encode())


@pytest.mark.parametrize(("quantity", "price", "budget", "allowed"), [
    ("100000", "100000", "99999999999999999999", True),          # 1e10
    ("1000000000", "1000000000.123456789", "99999999999999999999", True),  # ~1e18, 9 decimals
    ("100000", "100000", "9999999999", False),                   # over the budget: its rule
])
def test_large_notional_is_charged_exactly_or_refused_by_its_rule(
    tmp_path: Path, quantity: str, price: str, budget: str, allowed: bool
) -> None:
    policies = PolicySet({"bot": parse_file(Path("p.toml"), POLICY.format(budget=budget).encode())})

    async def run() -> tuple[bool, str]:
        store = open_store("sqlite", path=tmp_path / "s.db", url=None)
        try:
            decision = await PolicyRuntime(store, None).charge(
                evaluate(policies, "bot", "main", BINANCE.prepare(_order(quantity, price))))
        finally:
            await store.close()
        return decision.allowed, decision.rule

    ok, rule = asyncio.run(run())
    assert ok is allowed
    if not allowed:
        assert rule == "budget.client.notional.1m"
    assert Decimal(quantity) * Decimal(price) >= Decimal("1e10")
