"""Pure policy evaluation: (policy, client, account, canonical request) -> Decision.

No I/O and no clock: everything the decision depends on is an argument, so every rule can be
tested with a table. Every decision names the rule that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from proxy.policy.model import Grant, PolicySet
from proxy.request_model import Category, Intent, Prepared

Code = Literal["allow", "forbidden", "policy_denied"]


@dataclass(frozen=True)
class Decision:
    code: Code
    rule: str
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.code == "allow"


def evaluate(
    policies: PolicySet,
    client: str,
    account: str,
    prepared: Prepared,
    reference_prices: dict[str, Decimal] | None = None,
) -> Decision:
    """Decide one request. An account the client has no grant for is ``forbidden``, the same
    answer as an unknown account, so a bot cannot probe which accounts exist."""
    policy = policies.for_client(client)
    grant = policy.grant_for(account) if policy else None
    if grant is None:
        return Decision("forbidden", "grant", "no grant for this account")
    if prepared.category is Category.PUBLIC:
        return Decision("allow", "public")
    if prepared.category not in grant.allow:
        return Decision(
            "policy_denied", "allow",
            f"category {prepared.category} is not granted on {account}; the grant allows "
            f"{', '.join(sorted(grant.allow)) or 'nothing'}",
        )
    for intent in prepared.intents:
        denied = _check_intent(grant, prepared.category, intent, reference_prices or {})
        if denied is not None:
            return denied
    return Decision("allow", "grant")


def _check_intent(
    grant: Grant, category: Category, intent: Intent, refs: dict[str, Decimal]
) -> Decision | None:
    if grant.symbols is not None and category in (Category.TRADE, Category.CANCEL):
        if intent.symbol is None:
            if category is Category.CANCEL:
                return None  # cancel by order id only: reducing risk is never refused for lack of a symbol
            return Decision("policy_denied", "symbols", "the grant lists symbols; name one")
        if intent.symbol not in grant.symbols:
            return Decision("policy_denied", "symbols", f"symbol {intent.symbol} is not granted")
    if category is not Category.TRADE:
        return None
    if grant.max_order_qty is not None and intent.quantity is not None:
        if intent.quantity > grant.max_order_qty:
            return Decision(
                "policy_denied", "max_order_qty",
                f"quantity {intent.quantity} exceeds max_order_qty {grant.max_order_qty}",
            )
    if grant.max_order_notional is not None:
        notional = intent.notional
        if notional is None and intent.quantity is not None and intent.symbol in refs:
            notional = intent.quantity * refs[intent.symbol]
        if notional is None:
            return Decision(
                "policy_denied", "max_order_notional",
                "notional cannot be known for this order (no price and no reference price)",
            )
        if notional > grant.max_order_notional:
            return Decision(
                "policy_denied", "max_order_notional",
                f"notional {notional} exceeds max_order_notional {grant.max_order_notional}",
            )
    return None
