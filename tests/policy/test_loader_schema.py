"""The policy schema's own messages: an unknown key names the keys of its table, a missing key
says what to write, and every problem of a file comes at once, each with its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.errors import PolicyError
from proxy.policy.loader import parse_file

HEAD = 'version = 1\nclient = "bot"\n\n[[grants]]\naccount = "main"\nallow = ["trade"]\n'


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        parse_file(Path("p.toml"), text.encode())
    assert all(p.startswith("p.toml: ") and "; " in p for p in exc.value.problems), exc.value.problems
    return exc.value.problems


@pytest.mark.parametrize(("text", "expected"), [
    ('version = 1\nclient = "bot"\nowner = "x"\n',
     "p.toml: owner: unknown key; use version, client, rate_limit and [[grants]]"),
    (HEAD + "max_qty = \"1\"\n", "p.toml: grants[0].max_qty: unknown key; use one of account, allow, symbols"),
    (HEAD + '[grants.per_symbol.BTCUSDT]\nmax_qty = "1"\n',
     "p.toml: grants[0].per_symbol.BTCUSDT.max_qty: unknown key; "
     "use one of max_order_qty, max_order_notional, price_band"),
    (HEAD + '[[grants.budgets]]\nper = "client"\nwindow = "1m"\nmax_orders = 5\nfoo = 1\n',
     "p.toml: grants[0].budgets[0].foo: unknown key; use one of per, window, max_notional, max_orders"),
    ('client = "bot"\n', "p.toml: version: must be 1; use version = 1"),
    (HEAD + '[[grants.budgets]]\nper = "client"\nmax_orders = 5\n',
     "p.toml: grants[0].budgets[0].window: is required; use e.g. window = \"1m\""),
    ('version = 1\nclient = "bot"\ngrants = 5\n', "p.toml: grants: must be an array of tables; use [[grants]]"),
    ('version = 1\nclient = "bot"\ngrants = [5]\n', "p.toml: grants[0]: must be a table; use [[grants]]"),
    (HEAD + "[grants.per_symbol.BTCUSDT]\n", "p.toml: grants[0].per_symbol.BTCUSDT: must be a table with at least"),
])
def test_schema_messages_name_the_table_and_the_fix(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_problems_in_several_tables_come_together() -> None:
    found = problems(HEAD.replace('allow = ["trade"]', 'allow = ["trade", "reed"]')
                     + 'sides = ["up"]\nmax_order_qty = 1\nmode = "dry"\n[[grants.budgets]]\nper = "x"\n'
                     + 'window = "1w"\n')
    wheres = sorted(p.split(": ")[1] for p in found)
    assert wheres == ["grants[0].allow", "grants[0].budgets[0].per", "grants[0].budgets[0].window",
                      "grants[0].max_order_qty", "grants[0].mode", "grants[0].sides"]
