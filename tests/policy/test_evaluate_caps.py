"""The pure rules behind issue 12 cases 4-7: notional from the instrument (unknown: refused),
every price banded, legs checked, aliases resolved (two overrides for one market: refused)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from proxy.exchanges.base import endpoint
from proxy.exchanges.kraken import canonical_pair
from proxy.exchanges.okx import EXCHANGE as OKX
from proxy.model.request import Category, Instrument, Intent, Prepared
from proxy.policy.evaluate import EvalContext, evaluate, instrument_symbols
from proxy.policy.loader import parse_file
from proxy.policy.model import Budget, ClientPolicy, Grant, PolicySet, PriceBand, SymbolLimits
from proxy.policy.testing import load_cases, run_case

ALL = frozenset({Category.READ, Category.TRADE, Category.CANCEL})
PLACE = endpoint("POST", "/order", Category.TRADE)


def policies(**grant: object) -> PolicySet:
    return PolicySet({"bot": ClientPolicy("bot", (Grant(account="main", allow=ALL, **grant),))}, "v1")  # type: ignore[arg-type]


def order(*intents: Intent) -> Prepared:
    return Prepared("POST", "/order", "", b"", None, PLACE, intents)


SWAP = Intent(symbol="DOGE-USDT-SWAP", side="buy", order_type="limit", time_in_force="gtc",
              quantity=Decimal(100), price=Decimal("0.1"), market="SWAP")
DOGE = Instrument("DOGE-USDT-SWAP", "linear", Decimal(1000))


def test_notional_uses_the_contract_size_and_refuses_an_unknown_one() -> None:
    capped = policies(max_order_notional=Decimal(9999))
    denied = evaluate(capped, "bot", "main", order(SWAP), EvalContext(instruments={"DOGE-USDT-SWAP": DOGE}))
    assert (denied.rule, denied.message) == ("max_order_notional",
                                             "notional 10000.0 exceeds max_order_notional 9999")
    unknown = evaluate(capped, "bot", "main", order(SWAP), EvalContext())
    assert unknown.rule == "max_order_notional" and "never guessed" in unknown.message
    budget = policies(budgets=(Budget("client", "1h", 3600, max_notional=Decimal(10**9)),))
    assert evaluate(budget, "bot", "main", order(SWAP), EvalContext()).rule == "budget.client.notional.1h"
    assert instrument_symbols(capped, "bot", "main", order(SWAP)) == {("DOGE-USDT-SWAP", "SWAP")}


def test_no_instrument_read_for_an_order_a_static_rule_refuses() -> None:
    refused = policies(max_order_notional=Decimal(1), max_order_qty=Decimal(10), symbols=frozenset({"X"}))
    assert instrument_symbols(refused, "bot", "main", order(SWAP)) == frozenset()
    assert instrument_symbols(policies(max_order_notional=Decimal(1), order_types=frozenset({"market"})),
                              "bot", "main", order(SWAP)) == frozenset()
    assert instrument_symbols(policies(max_order_qty=Decimal(1)), "bot", "main", order(SWAP)) == frozenset()


def test_every_price_and_every_leg_is_checked() -> None:
    refs = EvalContext(reference_prices={"BTCUSDT": Decimal(50000)})
    banded = policies(price_band=PriceBand(Decimal("0.02"), "2%"))
    base = Intent(symbol="BTCUSDT", side="buy", order_type="limit", time_in_force="GTC",
                  quantity=Decimal(1), price=Decimal(50000), instrument=Instrument("BTCUSDT", "spot"))
    trigger = Intent(**{**base.__dict__, "prices": (Decimal(30000),)})
    assert evaluate(banded, "bot", "main", order(trigger), refs).rule == "price_band"
    leg = Intent(symbol="BTCUSDT", side="sell", order_type="market", time_in_force="IOC")
    with_leg = Intent(**{**base.__dict__, "legs": (leg,)})
    limit_only = policies(order_types=frozenset({"limit"}))
    denied = evaluate(limit_only, "bot", "main", order(with_leg), refs)
    assert denied.rule == "order_types" and denied.message.startswith("attached order:")
    assert evaluate(limit_only, "bot", "main", order(base), refs).allowed


def test_aliases_resolve_and_two_overrides_for_one_market_refuse() -> None:
    intent = Intent(symbol="XXBTZUSD", side="buy", order_type="limit", time_in_force="GTC",
                    quantity=Decimal("1.5"), price=Decimal(50000), instrument=Instrument("XXBTZUSD", "spot"))
    kraken = EvalContext(canonical=canonical_pair)
    capped = policies(symbols=frozenset({"XBTUSD"}), per_symbol={"XBTUSD": SymbolLimits(Decimal("0.1"))})
    assert evaluate(capped, "bot", "main", order(intent), kraken).rule == "max_order_qty"
    assert evaluate(capped, "bot", "main", order(intent), EvalContext()).rule == "symbols"  # as written
    twice = policies(per_symbol={"XBTUSD": SymbolLimits(Decimal(5)), "XXBTZUSD": SymbolLimits(Decimal(1))})
    denied = evaluate(twice, "bot", "main", order(intent), kraken)
    assert denied.rule == "symbols" and "XBTUSD, XXBTZUSD" in denied.message


def test_policy_test_files_give_contract_sizes_as_the_exchange_would(tmp_path: Path) -> None:
    """A policy test file names the instruments the proxy would read; without them a notional
    rule on a contract refuses, as the proxy does when it cannot read the size."""
    policy = 'version = 1\nclient = "bot"\n[[grants]]\naccount = "okx-main"\nallow = ["trade"]\n' \
             'max_order_notional = "10000"\n'
    tests = tmp_path / "bot.tests.toml"
    body = '{"instId":"DOGE-USDT-SWAP","tdMode":"cross","side":"buy","ordType":"limit","sz":"%s","px":"0.1"}'
    cases = "".join(
        f'\n[[cases]]\nname = "{sz}"\nclient = "bot"\naccount = "okx-main"\nmethod = "POST"\n'
        f"path = \"/api/v5/trade/order\"\nbody = '{body % sz}'\nexpect = \"{expect}\"\n"
        for sz, expect in (("100", "allow"), ("101", "deny")))
    tests.write_text('version = 1\n[instruments.okx-main]\n'
                     '"DOGE-USDT-SWAP" = { kind = "linear", contract_size = "1000" }\n' + cases)
    policies = PolicySet({"bot": parse_file(tmp_path / "bot.toml", policy.encode())}, "v1")
    outcomes = [run_case(policies, {"okx-main": OKX}, case) for case in load_cases(tests)]
    assert [(o.decision, o.passed) for o in outcomes] == [("allow", True), ("deny", True)]
    tests.write_text("version = 1\n" + cases)  # no instruments: the size is unknown
    assert [run_case(policies, {"okx-main": OKX}, c).rule for c in load_cases(tests)] == \
        ["max_order_notional", "max_order_notional"]
