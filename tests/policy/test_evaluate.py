"""Table-driven decisions: one readable id per rule, through the real Binance prepare()."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from proxy.exchanges.binance import EXCHANGE as BINANCE
from proxy.model.request import Inbound, Prepared
from proxy.policy.evaluate import EvalContext, evaluate, reference_symbols
from proxy.policy.loader import parse_file
from proxy.policy.model import PolicySet

POLICY = """
version = 1
client = "bot"

[[grants]]
account = "main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT", "ETHUSDT"]
sides = ["buy", "sell"]
order_types = ["limit", "market"]
time_in_force = ["GTC"]
max_order_qty = "0.5"
max_order_notional = "25000"
price_band = "2%"

[grants.per_symbol.ETHUSDT]
max_order_qty = "8"
price_band = "100bps"

[[grants.budgets]]
per = "client"
window = "1m"
max_orders = 10
max_notional = "100000"

[[grants]]
account = "sells"
allow = ["trade"]
sides = ["sell"]
mode = "report"
max_order_qty = "1"

[[grants]]
account = "reader"
allow = ["read"]
"""
REFS = {"BTCUSDT": Decimal(50000), "ETHUSDT": Decimal(3000)}


def policies() -> PolicySet:
    policy = parse_file(Path("bot.toml"), POLICY.encode())
    return PolicySet({policy.client: policy}, version="t")


def order(**over: str) -> Prepared:
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": "0.1", "price": "50000"}
    params.update(over)
    body = "&".join(f"{k}={v}" for k, v in params.items() if v != "")
    return BINANCE.prepare(Inbound("POST", "/api/v3/order", b"",
                                   (("content-type", "application/x-www-form-urlencoded"),), body.encode()))


def get(path: str, query: str = "", method: str = "GET") -> Prepared:
    return BINANCE.prepare(Inbound(method, path, query.encode(), (), b""))


CASES = [
    ("limit_inside_everything", "main", order(), {}, "allow", "grant"),
    ("read_balance", "main", get("/api/v3/account"), {}, "allow", "grant"),
    ("public_ticker", "reader", get("/api/v3/ticker/price", "symbol=BTCUSDT"), {}, "allow", "public"),
    ("unknown_account_forbidden", "nope", get("/api/v3/account"), {}, "forbidden", "grant"),
    ("category_not_granted", "reader", order(), {}, "policy_denied", "allow"),
    ("symbol_not_granted", "main", order(symbol="SOLUSDT"), {}, "policy_denied", "symbols"),
    ("side_not_granted_report_mode", "sells", order(quantity="0.1"), {}, "allow", "report"),
    ("order_type_not_granted", "main", order(type="LIMIT_MAKER", timeInForce=""), {}, "policy_denied",
     "order_types"),
    ("tif_not_granted", "main", order(timeInForce="IOC"), {}, "policy_denied", "time_in_force"),
    ("qty_over_cap", "main", order(quantity="0.51"), {}, "policy_denied", "max_order_qty"),
    ("qty_at_cap", "main", order(quantity="0.5"), {}, "allow", "grant"),
    ("eth_override_qty", "main", order(symbol="ETHUSDT", quantity="7", price="3000"), {}, "allow", "grant"),
    ("eth_override_still_capped", "main", order(symbol="ETHUSDT", quantity="8.1", price="3000"), {},
     "policy_denied", "max_order_qty"),
    ("notional_over_cap", "main", order(quantity="0.5", price="50001"), {}, "policy_denied",
     "max_order_notional"),
    ("market_notional_from_reference", "main",
     order(type="MARKET", timeInForce="", price="", quantity="0.5"), {"BTCUSDT": Decimal(60000)},
     "policy_denied", "max_order_notional"),
    ("market_without_reference_refused", "main",
     order(type="MARKET", timeInForce="", price="", quantity="0.1"), {"BTCUSDT": None},
     "policy_denied", "max_order_notional"),
    ("quote_sized_market_qty_from_reference", "main",
     order(type="MARKET", timeInForce="", price="", quantity="", quoteOrderQty="24000"),
     {"BTCUSDT": Decimal(40000)}, "policy_denied", "max_order_qty"),
    ("quote_sized_market_over_notional", "main",
     order(type="MARKET", timeInForce="", price="", quantity="", quoteOrderQty="25001"),
     {"BTCUSDT": Decimal(60000)},
     "policy_denied", "max_order_notional"),
    ("band_inside", "main", order(price="50999"), {}, "allow", "grant"),
    ("band_above", "main", order(price="51001", quantity="0.01"), {}, "policy_denied", "price_band"),
    ("band_below", "main", order(price="48999", quantity="0.01"), {}, "policy_denied", "price_band"),
    ("band_eth_override_bps", "main", order(symbol="ETHUSDT", price="3031", quantity="1"), {},
     "policy_denied", "price_band"),
    ("band_no_reference_fails_closed", "main", order(), {"BTCUSDT": None}, "policy_denied", "price_band"),
    ("cancel_by_symbol", "main", get("/api/v3/openOrders", "symbol=BTCUSDT", "DELETE"), {}, "allow", "grant"),
    ("cancel_other_symbol", "main", get("/api/v3/openOrders", "symbol=SOLUSDT", "DELETE"), {},
     "policy_denied", "symbols"),
]


@pytest.mark.parametrize(("account", "prepared", "refs", "code", "rule"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_evaluate_table(account: str, prepared: Prepared, refs: dict[str, Decimal | None], code: str,
                        rule: str) -> None:
    prices = {k: v for k, v in {**REFS, **refs}.items() if v is not None}
    decision = evaluate(policies(), "bot", account, prepared, EvalContext(reference_prices=prices))
    assert (decision.code, decision.rule) == (code, rule), decision.message


KILL = [
    ("kill_client_blocks_order", order(), True, False, "account_paused", "kill_switch.client"),
    ("kill_account_blocks_order", order(), False, True, "account_paused", "kill_switch.account"),
    ("kill_blocks_read", get("/api/v3/account"), True, False, "account_paused", "kill_switch.client"),
    ("kill_leaves_cancel", get("/api/v3/openOrders", "symbol=BTCUSDT", "DELETE"), True, True, "allow", "grant"),
    ("kill_leaves_public", get("/api/v3/time"), True, True, "allow", "public"),
]


@pytest.mark.parametrize(("prepared", "kc", "ka", "code", "rule"), [k[1:] for k in KILL], ids=[k[0] for k in KILL])
def test_evaluate_kill_switch(prepared: Prepared, kc: bool, ka: bool, code: str, rule: str) -> None:
    ctx = EvalContext(reference_prices=REFS, kill_client=kc, kill_account=ka)
    decision = evaluate(policies(), "bot", "main", prepared, ctx)
    assert (decision.code, decision.rule) == (code, rule)


def test_evaluate_report_mode_names_the_would_deny_rule() -> None:
    decision = evaluate(policies(), "bot", "sells", order(quantity="2"), EvalContext(reference_prices=REFS))
    assert decision.allowed and decision.would_deny is not None
    assert decision.would_deny.rule == "sides"


def test_evaluate_budget_charges_and_usage() -> None:
    decision = evaluate(policies(), "bot", "main", order(), EvalContext(reference_prices=REFS))
    charges = {c.rule: c.amount for c in decision.charges}
    assert charges == {"budget.client.orders.1m": Decimal(1), "budget.client.notional.1m": Decimal(5000)}
    full = EvalContext(reference_prices=REFS, budget_usage={"budget.client.notional.1m": Decimal(96000)})
    denied = evaluate(policies(), "bot", "main", order(), full)
    assert (denied.code, denied.rule) == ("rate_limited", "budget.client.notional.1m")


def test_reference_symbols_only_when_needed() -> None:
    assert reference_symbols(policies(), "bot", "main", order()) == {"BTCUSDT"}
    assert reference_symbols(policies(), "bot", "main", get("/api/v3/account")) == frozenset()
    assert reference_symbols(policies(), "bot", "sells", order(quantity="0.5")) == frozenset()
