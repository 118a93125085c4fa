"""Per-account budgets declared in several policy files: one counter, one set of limits.

A per-account budget is shared by every client of the account, so files that declare it for
the same account and window must mean one thing. Where they differ, the lowest of each limit
applies to all of them, with a warning: lowering it in one file is an edit that only takes
permissions away, and such an edit is never refused.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import TypeVar

from proxy.policy.model import ClientPolicy

_Limit = TypeVar("_Limit", Decimal, int)


def reconcile_account_budgets(
    clients: dict[str, ClientPolicy], warnings: list[str],
) -> dict[str, ClientPolicy]:
    """``clients`` with each per-account budget set to the lowest limits any file gives it;
    a warning for each file that disagrees."""
    merged: dict[tuple[str, int], tuple[Decimal | None, int | None, str]] = {}
    for policy in clients.values():
        for grant in policy.grants:
            for budget in grant.budgets:
                if budget.per != "account":
                    continue
                key = (grant.account, budget.window_s)
                if key not in merged:
                    merged[key] = (budget.max_notional, budget.max_orders, grant.source)
                    continue
                notional, orders, where = merged[key]
                if (notional, orders) != (budget.max_notional, budget.max_orders):
                    warnings.append(
                        f"{grant.source}.budgets: the per-account budget for {grant.account} over "
                        f"{budget.window} differs from the one in {where}; the lower limits apply to "
                        "both; use the same limits in both (or per = \"client\")")
                merged[key] = (_lowest(notional, budget.max_notional), _lowest(orders, budget.max_orders),
                               where)
    if not merged:
        return clients
    out: dict[str, ClientPolicy] = {}
    for name, policy in clients.items():
        grants = tuple(dataclasses.replace(grant, budgets=tuple(
            dataclasses.replace(b, max_notional=merged[(grant.account, b.window_s)][0],
                                max_orders=merged[(grant.account, b.window_s)][1])
            if b.per == "account" else b for b in grant.budgets)) for grant in policy.grants)
        out[name] = policy if grants == policy.grants else dataclasses.replace(policy, grants=grants)
    return out


def _lowest(a: _Limit | None, b: _Limit | None) -> _Limit | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
