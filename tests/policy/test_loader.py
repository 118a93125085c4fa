"""Strict, versioned schema: every problem is ``file: where: problem; use X``."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from proxy.errors import PolicyError
from proxy.policy.loader import load_dir, parse_file

HEAD = 'version = 1\nclient = "bot"\n\n[[grants]]\naccount = "main"\n'


def problems(text: str, known: set[str] | None = None) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        parse_file(Path("p.toml"), text.encode(), known)
    for problem in exc.value.problems:
        assert problem.startswith("p.toml: ") and "; " in problem, problem
    return exc.value.problems


INVALID = [
    ("unknown_top_key", 'version = 1\nclient = "bot"\nowner = "x"\n', "p.toml: owner: unknown key"),
    ("wrong_version", 'version = 2\nclient = "bot"\n', "p.toml: version: must be 1"),
    ("unknown_grant_key", HEAD + 'allow = ["read"]\nmax_qty = "1"\n', "grants[0].max_qty: unknown key"),
    ("unknown_category", HEAD + 'allow = ["reed"]\n', "unknown category 'reed'"),
    ("withdraw_granted", HEAD + 'allow = ["read", "withdraw"]\n', "'withdraw' can never be granted"),
    ("transfer_granted", HEAD + 'allow = ["transfer"]\n', "'transfer' can never be granted"),
    ("admin_granted", HEAD + 'allow = ["admin"]\n', "'admin' can never be granted"),
    ("public_granted", HEAD + 'allow = ["public"]\n', "needs no grant"),
    ("missing_allow", HEAD, "grants[0].allow: is required"),
    ("float_cap", HEAD + 'allow = ["trade"]\nmax_order_qty = 0.5\n', "use quotes"),
    ("exponent_cap", HEAD + 'allow = ["trade"]\nmax_order_qty = "1e3"\n', "not a plain decimal"),
    ("signed_cap", HEAD + 'allow = ["trade"]\nmax_order_notional = "-5"\n', "not a plain decimal"),
    ("zero_cap", HEAD + 'allow = ["trade"]\nmax_order_qty = "0"\n', "greater than 0"),
    ("bad_side", HEAD + 'allow = ["trade"]\nsides = ["long"]\n', "grants[0].sides"),
    ("bad_band", HEAD + 'allow = ["trade"]\nprice_band = "2 percent"\n', "not a price band"),
    ("band_too_wide", HEAD + 'allow = ["trade"]\nprice_band = "100%"\n', "less than 100%"),
    ("override_unknown_key",
     HEAD + 'allow = ["trade"]\n[grants.per_symbol.BTCUSDT]\nmax_qty = "1"\n', "per_symbol.BTCUSDT.max_qty"),
    ("budget_bad_window", HEAD + 'allow = ["trade"]\n[[grants.budgets]]\nper = "client"\nwindow = "1w"\n'
     'max_orders = 5\n', "is not a window"),
    ("budget_no_limit", HEAD + 'allow = ["trade"]\n[[grants.budgets]]\nper = "client"\nwindow = "1m"\n',
     "sets no limit"),
    ("budget_bad_per", HEAD + 'allow = ["trade"]\n[[grants.budgets]]\nper = "host"\nwindow = "1m"\n'
     'max_orders = 5\n', "budgets[0].per"),
    ("budget_float_orders", HEAD + 'allow = ["trade"]\n[[grants.budgets]]\nper = "client"\nwindow = "1m"\n'
     'max_orders = 5.5\n', "whole number"),
    ("budget_twice_same_window",
     HEAD + 'allow = ["trade"]\n[[grants.budgets]]\nper = "client"\nwindow = "1m"\nmax_orders = 5\n'
     '[[grants.budgets]]\nper = "client"\nwindow = "60s"\nmax_orders = 6\n', "already set"),
    ("bad_mode", HEAD + 'allow = ["read"]\nmode = "dry-run"\n', "is not a mode"),
    ("same_account_twice", HEAD + 'allow = ["read"]\n[[grants]]\naccount = "main"\nallow = ["trade"]\n',
     "granted twice"),
    ("unknown_account", HEAD + 'allow = ["read"]\n', "not an account in the configuration"),
    ("not_toml", "version = = 1", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_loader_refuses_with_a_useful_message(text: str, expected: str) -> None:
    found = problems(text, {"other"} if "unknown_account" in expected or "configuration" in expected else None)
    assert any(expected in p for p in found), found


def test_loader_reports_every_problem_at_once() -> None:
    found = problems(HEAD + 'allow = ["withdraw"]\nmax_order_qty = 1\nsides = ["up"]\n')
    assert len(found) >= 3


def test_loader_conflicting_account_budgets_across_files_lowest_applies(tmp_path: Path) -> None:
    """Lowering a shared per-account budget in one file only takes permissions away: a warning,
    and the lower limit holds for every client of the account."""
    budget = '\n[[grants.budgets]]\nper = "account"\nwindow = "1d"\nmax_notional = "{}"\n'
    for client, limit in (("a", "100"), ("b", "200")):
        (tmp_path / f"{client}.toml").write_text(
            f'version = 1\nclient = "{client}"\n[[grants]]\naccount = "main"\nallow = ["trade"]\n'
            + budget.format(limit))
    policies = load_dir(tmp_path)
    assert any("differs from the one in" in w and "the lower limits apply" in w for w in policies.warnings)
    for client in ("a", "b"):
        assert policies.clients[client].grants[0].budgets[0].max_notional == Decimal("100")


NARROWING = [
    ("caps_without_trade", HEAD + 'allow = ["read", "cancel"]\nmax_order_qty = "1"\nprice_band = "2%"\n'
     '[[grants.budgets]]\nper = "client"\nwindow = "1m"\nmax_orders = 5\n',
     "grants[0]: max_order_qty, price_band, budgets set but \"trade\" is not allowed"),
    ("override_for_removed_symbol",
     HEAD + 'allow = ["trade"]\nsymbols = ["BTCUSDT"]\n[grants.per_symbol.ETHUSDT]\nmax_order_qty = "1"\n',
     "grants[0].per_symbol.ETHUSDT: 'ETHUSDT' is not in this grant's symbols"),
    ("every_symbol_removed", HEAD + 'allow = ["trade", "cancel"]\nsymbols = []\n', "grants[0].symbols: is empty"),
    ("every_side_removed", HEAD + 'allow = ["trade"]\nsides = []\n', "grants[0].sides: is empty"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in NARROWING], ids=[c[0] for c in NARROWING])
def test_loader_never_refuses_an_edit_that_only_takes_permissions_away(text: str, expected: str) -> None:
    warnings: list[str] = []
    policy = parse_file(Path("p.toml"), text.encode(), None, warnings)
    assert policy.client == "bot"
    assert any(w.startswith("p.toml: " + expected) for w in warnings), warnings


def test_loader_an_override_for_a_removed_symbol_is_dropped() -> None:
    text = HEAD + 'allow = ["trade"]\nsymbols = ["BTCUSDT"]\nmax_order_qty = "1"\n' \
        '[grants.per_symbol.ETHUSDT]\nmax_order_qty = "9"\n'
    assert dict(parse_file(Path("p.toml"), text.encode()).grants[0].per_symbol) == {}


def test_loader_partial_holds_the_client_of_a_file_that_does_not_load(tmp_path: Path) -> None:
    """A serving worker loads what loads; a broken file's client is held (refused outright),
    never left with an older policy, while the other clients load."""
    (tmp_path / "good.toml").write_text('version = 1\nclient = "good"\n[[grants]]\naccount = "main"\n'
                                        'allow = ["read"]\n')
    (tmp_path / "bad.toml").write_text('version = 1\nclient = "bad"\n[[grants]]\naccount = "main"\n'
                                       'allow = ["read"]\ntypo = 1\n')
    (tmp_path / "broken.toml").write_text('version = 1\nclient = "broken"\n[[grants]\n')
    with pytest.raises(PolicyError):
        load_dir(tmp_path)
    policies = load_dir(tmp_path, partial=True)
    assert set(policies.clients) == {"good"}
    assert dict(policies.held) == {"bad": str(tmp_path / "bad.toml"), "broken": str(tmp_path / "broken.toml")}
    assert any("typo: unknown key" in p for p in policies.problems)
    assert any("not valid TOML" in p for p in policies.problems)


def test_loader_partial_holds_a_client_named_by_two_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text('version = 1\nclient = "bot"\n[[grants]]\naccount = "main"\n'
                                               'allow = ["read"]\n')
    policies = load_dir(tmp_path, partial=True)
    assert policies.clients == {} and "bot" in policies.held


def test_loader_ignores_test_files_and_versions_the_set(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(HEAD + 'allow = ["read"]\n')
    (tmp_path / "a.tests.toml").write_text("not a policy")
    first = load_dir(tmp_path)
    (tmp_path / "a.toml").write_text(HEAD + 'allow = ["read", "cancel"]\n')
    second = load_dir(tmp_path)
    assert set(first.clients) == {"bot"} and first.version != second.version


def test_loader_example_policies_are_valid() -> None:
    repo = Path(__file__).resolve().parents[2]
    policies = load_dir(repo / "policies", {"binance-main", "binance-hedge", "okx-main"})
    assert set(policies.clients) == {"market-maker", "dashboard", "risk-bot", "rollout-bot"}


def test_loader_rate_limits_per_client_and_per_grant() -> None:
    text = 'version = 1\nclient = "bot"\nrate_limit = "20/second; 1000/hour"\n\n[[grants]]\naccount = "main"\n' \
        'allow = ["read"]\nrate_limit = "5 per 10 seconds"\n'
    policy = parse_file(Path("p.toml"), text.encode())
    assert [(r.amount, r.window_s) for r in policy.rate_limits] == [(20, 1), (1000, 3600)]
    assert [(r.amount, r.window_s, r.text) for r in policy.grants[0].rate_limits] == [(5, 10, "5 per 10 seconds")]


@pytest.mark.parametrize(("value", "expected"), [
    ('"20/sec"', "is not a rate; use e.g. rate_limit = \"20/second\""),
    ("20", "must be a string"),
    ('"0/second"', "allows nothing"),
    ('"1/month"', "between 1 second and 1 day"),
    ('"1/second; 5/second"', "two rates over the same window"),
])
def test_loader_rate_limit_problems(value: str, expected: str) -> None:
    found = problems(HEAD + f'allow = ["read"]\nrate_limit = {value}\n')
    assert any("grants[0].rate_limit: " in p and expected in p for p in found), found
    found = problems(f'version = 1\nclient = "bot"\nrate_limit = {value}\n')
    assert any(p.startswith("p.toml: rate_limit: ") and expected in p for p in found), found
