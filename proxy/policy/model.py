"""The policy model (docs/interface.md §7, grown in policies/README.md): values only.

The loader validates everything, so a value here is always well-formed: evaluation never has to
second-guess a policy, and a policy that loaded is a policy that means one thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from proxy.model.request import Category

Mode = Literal["enforce", "report"]
BudgetScope = Literal["client", "account"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PriceBand:
    """How far a limit price may be from the reference price, as a fraction of it."""

    fraction: Decimal
    text: str  # as written ("2%", "50bps"), for messages


@dataclass(frozen=True)
class SymbolLimits:
    """Per-symbol overrides of a grant's caps and band (None: the grant's value applies)."""

    max_order_qty: Decimal | None = None
    max_order_notional: Decimal | None = None
    price_band: PriceBand | None = None


@dataclass(frozen=True)
class Budget:
    """A rolling budget over ``window_s``: per this client on the account, or per account
    (every client together)."""

    per: BudgetScope
    window: str  # as written ("1m", "1d"): part of the rule name
    window_s: int
    max_notional: Decimal | None = None
    max_orders: int | None = None

    def rule(self, kind: Literal["notional", "orders"]) -> str:
        return f"budget.{self.per}.{kind}.{self.window}"

    def storage_key(self, kind: Literal["notional", "orders"], client: str, account: str) -> str:
        """Length-prefixed so no client or account name can forge another's key."""
        who = f"{len(account)}:{account}" if self.per == "account" else \
            f"{len(client)}:{client}|{len(account)}:{account}"
        return f"budget|{self.per}|{kind}|{self.window_s}|{who}"


@dataclass(frozen=True)
class RateLimit:
    """At most ``amount`` requests per ``window_s`` seconds, shared by every worker and host;
    ``text`` is one item as written (proxy.policy.rate_notation: "20/second")."""

    amount: int
    window_s: int
    text: str


@dataclass(frozen=True)
class Grant:
    """What one client may do on one account."""

    account: str
    allow: frozenset[Category]
    symbols: frozenset[str] | None = None      # None: every symbol
    max_order_qty: Decimal | None = None
    max_order_notional: Decimal | None = None
    sides: frozenset[str] | None = None        # "buy", "sell"
    order_types: frozenset[str] | None = None  # lower-case exchange types
    time_in_force: frozenset[str] | None = None  # lower-case exchange spellings
    price_band: PriceBand | None = None
    per_symbol: Mapping[str, SymbolLimits] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()
    mode: Mode = "enforce"
    source: str = ""                           # "file: grants[i]" for messages
    rate_limits: tuple[RateLimit, ...] = ()    # this client on this account (rate_limit.grant)

    def limits(self, symbol: str | None) -> SymbolLimits:
        """The caps and band in force for ``symbol`` (per-symbol override, else the grant's)."""
        over = self.per_symbol.get(symbol) if symbol is not None else None
        if over is None:
            return SymbolLimits(self.max_order_qty, self.max_order_notional, self.price_band)
        return SymbolLimits(
            over.max_order_qty if over.max_order_qty is not None else self.max_order_qty,
            over.max_order_notional if over.max_order_notional is not None else self.max_order_notional,
            over.price_band if over.price_band is not None else self.price_band,
        )


@dataclass(frozen=True)
class ClientPolicy:
    client: str
    grants: tuple[Grant, ...]
    source: str = ""
    rate_limits: tuple[RateLimit, ...] = ()    # this client on every account (rate_limit.client)

    def grant_for(self, account: str) -> Grant | None:
        for grant in self.grants:
            if grant.account == account:
                return grant
        return None


@dataclass(frozen=True)
class PolicySet:
    """Every client's policy, as loaded together; ``version`` identifies the set in audit.

    A set is built whole and swapped in with one assignment, so a request always sees one
    complete set (never half of a reload).
    """

    clients: dict[str, ClientPolicy] = field(default_factory=dict)
    version: str = ""
    #: clients whose policy file does not load now, with the file: refused outright (503
    #: ``policy_invalid``) until it loads, never served by an older version of their policy
    held: Mapping[str, str] = field(default_factory=dict)
    #: why files did not load (``file: where: problem; use X``); empty when every file loaded
    problems: tuple[str, ...] = ()
    #: what loaded but can never apply (limits on a grant that cannot trade, ...), for
    #: ``policy check`` and the log; never a reason to refuse an edit
    warnings: tuple[str, ...] = ()

    def for_client(self, client: str) -> ClientPolicy | None:
        return self.clients.get(client)
