"""The policy model (CONTRACT.md §5): values only, validated by the loader."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from proxy.request_model import Category


@dataclass(frozen=True)
class Grant:
    """What one client may do on one account."""

    account: str
    allow: frozenset[Category]
    symbols: frozenset[str] | None = None      # None: every symbol
    max_order_qty: Decimal | None = None
    max_order_notional: Decimal | None = None
    source: str = ""                           # "file: grants[i]" for messages


@dataclass(frozen=True)
class ClientPolicy:
    client: str
    grants: tuple[Grant, ...]
    source: str = ""

    def grant_for(self, account: str) -> Grant | None:
        for grant in self.grants:
            if grant.account == account:
                return grant
        return None


@dataclass(frozen=True)
class PolicySet:
    """Every client's policy, as loaded together; ``version`` identifies the set in audit."""

    clients: dict[str, ClientPolicy] = field(default_factory=dict)
    version: str = ""

    def for_client(self, client: str) -> ClientPolicy | None:
        return self.clients.get(client)
