"""Pure policy evaluation: (policy, client, account, canonical request, context) -> Decision.

No I/O and no clock: reference prices, kill-switch flags and budget usage arrive in an
:class:`EvalContext`, so every rule can be tested with a table and a policy test file gives the
same answer as the running proxy. Every decision names the rule that made it (the names are
listed in policies/README.md and must stay stable: dashboards and alerts key on them).

Budgets are not spent here: the decision carries the :class:`Charge` list and the pipeline
applies it atomically in the state store (``add_to_window(limit=...)``), refusing when over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

from proxy.model.request import Action, Category, Instrument, Intent, Prepared
from proxy.policy.model import Grant, PolicySet, SymbolLimits

Code = Literal["allow", "forbidden", "policy_denied", "account_paused", "rate_limited"]


@dataclass(frozen=True)
class EvalContext:
    """Everything outside the request that a decision may depend on."""

    reference_prices: Mapping[str, Decimal] = field(default_factory=dict)
    kill_client: bool = False
    kill_account: bool = False
    #: Current usage per budget rule name (e.g. "budget.client.orders.1m"); the proxy passes
    #: none and enforces atomically in the store, policy test files use it to test budgets.
    budget_usage: Mapping[str, Decimal] = field(default_factory=dict)
    #: Instruments read from the exchange (by the intent's symbol) for intents whose request
    #: alone does not say how their quantity counts; missing: a notional rule refuses.
    instruments: Mapping[str, Instrument] = field(default_factory=dict)
    #: The exchange's canonical spelling of a symbol (aliases resolved, e.g. an ``XXBTZUSD``
    #: spelling -> ``XBTUSD``); applied to the request's symbols and to every symbol the policy names.
    canonical: Callable[[str], str] = str


@dataclass(frozen=True)
class Charge:
    """An amount to add to one rolling window, refused if the total would exceed ``limit``."""

    rule: str
    key: str
    amount: Decimal
    window_s: int
    limit: Decimal


@dataclass(frozen=True)
class Decision:
    code: Code
    rule: str
    message: str = ""
    charges: tuple[Charge, ...] = ()
    #: report mode: the denial enforce mode would have made (the request is allowed)
    would_deny: Decision | None = None
    #: the grant is in report mode: budget refusals in the store also become would_deny
    report: bool = False

    @property
    def allowed(self) -> bool:
        return self.code == "allow"


ALLOW_PUBLIC = Decision("allow", "public")


def evaluate(
    policies: PolicySet,
    client: str,
    account: str,
    prepared: Prepared,
    context: EvalContext | None = None,
) -> Decision:
    """Decide one request. An account the client has no grant for is ``forbidden``, the same
    answer as an unknown account, so a bot cannot probe which accounts exist."""
    ctx = context or EvalContext()
    policy = policies.for_client(client)
    grant = policy.grant_for(account) if policy else None
    if grant is None:
        return Decision("forbidden", "grant", "no grant for this account")
    category = prepared.category
    if category is Category.PUBLIC:
        return ALLOW_PUBLIC
    # Operator actions and the grant's categories are hard limits, even in report mode.
    if category is not Category.CANCEL:
        if ctx.kill_account:
            return Decision("account_paused", "kill_switch.account",
                            f"account {account} is paused by its kill switch; only cancels are allowed")
        if ctx.kill_client:
            return Decision("account_paused", "kill_switch.client",
                            f"client {client} is paused by its kill switch; only cancels are allowed")
    if category not in grant.allow:
        return Decision(
            "policy_denied", "allow",
            f"category {category} is not granted on {account}; the grant allows "
            f"{', '.join(sorted(grant.allow)) or 'nothing'}",
        )
    denied: Decision | None = None
    for intent in prepared.intents:
        denied = _check_intent(grant, category, intent, ctx)
        if denied is not None:
            break
    charges: tuple[Charge, ...] = ()
    places = prepared.endpoint.action in (Action.PLACE, Action.AMEND)
    if denied is None and category is Category.TRADE and places:
        charges_or_denial = _charges(grant, client, account, prepared.intents, ctx)
        if isinstance(charges_or_denial, Decision):
            denied = charges_or_denial
        else:
            charges = charges_or_denial
    report = grant.mode == "report"
    if denied is None:
        return Decision("allow", "grant", charges=charges, report=report)
    if report:
        return Decision("allow", "report", f"report mode: would deny ({denied.rule})",
                        charges=charges, would_deny=denied, report=True)
    return denied


def reference_symbols(policies: PolicySet, client: str, account: str, prepared: Prepared,
                      canonical: Callable[[str], str] = str) -> frozenset[str]:
    """The symbols whose reference price this request's decision needs (none: do not fetch)."""
    grant = _trade_grant(policies, client, account, prepared)
    if grant is None:
        return frozenset()
    wanted: set[str] = set()
    notional_budget = any(b.max_notional is not None for b in grant.budgets)
    for intent in prepared.intents:
        if intent.symbol is None:
            continue
        limits = _limits(grant, intent.symbol, canonical)
        if isinstance(limits, Decision):
            continue
        priced = intent.price is not None or bool(intent.prices) or any(
            leg.price is not None or leg.prices for leg in intent.legs)
        band = limits.price_band is not None and priced
        # a limit price (or a quote-sized amount) prices the notional; the instrument sizes it
        notional = intent.price is None and intent.quote_quantity is None and (
            limits.max_order_notional is not None or notional_budget)
        quantity = intent.quantity is None and limits.max_order_qty is not None
        if band or notional or quantity:
            wanted.add(intent.symbol)
    return frozenset(wanted)


def instrument_symbols(policies: PolicySet, client: str, account: str, prepared: Prepared,
                       canonical: Callable[[str], str] = str) -> frozenset[tuple[str, str]]:
    """(symbol, market) of each intent whose notional a rule needs and whose request does not
    say how its quantity counts: the proxy reads these from the exchange's instruments."""
    grant = _trade_grant(policies, client, account, prepared)
    if grant is None or prepared.endpoint.action not in (Action.PLACE, Action.AMEND, Action.VALIDATE):
        return frozenset()
    notional_budget = any(b.max_notional is not None for b in grant.budgets)
    wanted: set[tuple[str, str]] = set()
    for intent in prepared.intents:
        if intent.symbol is None or intent.instrument is not None or intent.quantity is None:
            continue  # nothing to size (a quantity-less amend refuses a notional rule anyway)
        if grant.symbols is not None and not _granted_symbol(grant.symbols, intent.symbol, canonical):
            continue  # refused without asking the exchange anything
        limits = _limits(grant, intent.symbol, canonical)
        if isinstance(limits, Decision) or _check_shape(grant, intent, "") is not None:
            continue  # refused without asking the exchange anything
        if limits.max_order_qty is not None and intent.quantity is not None \
                and intent.quantity > limits.max_order_qty:
            continue
        if limits.max_order_notional is not None or notional_budget:
            wanted.add((intent.symbol, intent.market))
    return frozenset(wanted)


def _trade_grant(policies: PolicySet, client: str, account: str, prepared: Prepared) -> Grant | None:
    policy = policies.for_client(client)
    grant = policy.grant_for(account) if policy else None
    return grant if grant is not None and prepared.category is Category.TRADE else None


def deny(rule: str, message: str) -> Decision:
    return Decision("policy_denied", rule, message)


def _check_intent(grant: Grant, category: Category, intent: Intent, ctx: EvalContext) -> Decision | None:
    refs = ctx.reference_prices
    if grant.symbols is not None and category in (Category.TRADE, Category.CANCEL):
        if intent.symbol is None:
            if category is Category.CANCEL:
                return None  # cancel by order id only: reducing risk is never refused for lack of a symbol
            return deny("symbols", "the grant lists symbols; name one")
        if not _granted_symbol(grant.symbols, intent.symbol, ctx.canonical):
            return deny("symbols", f"symbol {intent.symbol} is not granted")
    if category is not Category.TRADE:
        return None
    for leg in (intent, *intent.legs):
        denied = _check_shape(grant, leg, "" if leg is intent else "attached order: ")
        if denied is not None:
            return denied
    limits = _limits(grant, intent.symbol, ctx.canonical)
    if isinstance(limits, Decision):
        return limits
    ref = refs.get(intent.symbol) if intent.symbol is not None else None
    if limits.max_order_qty is not None:
        qty = intent.quantity
        if qty is None and intent.quote_quantity is not None and ref is not None and ref > 0:
            qty = intent.quote_quantity / ref
        if qty is None:
            return deny("max_order_qty", "the quantity of this order cannot be known "
                        "(quote-sized and no reference price); send a base quantity")
        if qty > limits.max_order_qty:
            return deny("max_order_qty", f"quantity {qty} exceeds max_order_qty {limits.max_order_qty}")
    if limits.max_order_notional is not None:
        notional = order_notional(intent, ref, ctx.instruments)
        if isinstance(notional, str):
            return deny("max_order_notional", notional)
        if notional > limits.max_order_notional:
            return deny("max_order_notional",
                        f"notional {notional} exceeds max_order_notional {limits.max_order_notional}")
    band = limits.price_band
    prices = [p for leg in (intent, *intent.legs)
              for p in ((leg.price,) if leg.price is not None else ()) + leg.prices]
    if band is not None and prices:
        if ref is None or ref <= 0:
            return deny("price_band", f"no reference price for {intent.symbol}; refused (fail closed)")
        for price in prices:
            if abs(price - ref) / ref > band.fraction:
                return deny("price_band", f"price {price} is more than {band.text} from the "
                            f"reference price {ref}")
    return None


def _check_shape(grant: Grant, intent: Intent, what: str) -> Decision | None:
    """Side, order type and time in force, on the effective values: exchange modules apply the
    exchange's default time in force, so None means the exchange applies none to this order
    (a market order on some exchanges), never that the request omitted it."""
    if grant.sides is not None and (intent.side or "") not in grant.sides:
        return deny("sides", f"{what}side {intent.side} is not granted; "
                    f"the grant allows {_list(grant.sides)}")
    if grant.order_types is not None and (intent.order_type or "").lower() not in grant.order_types:
        return deny("order_types", f"{what}order type {intent.order_type} is not granted; "
                    f"the grant allows {_list(grant.order_types)}")
    if grant.time_in_force is not None and intent.time_in_force is not None \
            and intent.time_in_force.lower() not in grant.time_in_force:
        return deny("time_in_force", f"{what}time in force {intent.time_in_force} is not granted; "
                    f"the grant allows {_list(grant.time_in_force)}")
    return None


def _granted_symbol(symbols: frozenset[str], symbol: str, canonical: Callable[[str], str]) -> bool:
    if symbol in symbols:
        return True
    wanted = canonical(symbol)
    return any(canonical(s) == wanted for s in symbols)


def _limits(grant: Grant, symbol: str | None, canonical: Callable[[str], str]) -> SymbolLimits | Decision:
    """The grant's limits for ``symbol``, its per-symbol override found under any alias; two
    overrides naming one market are refused (which one holds would be a guess)."""
    if symbol is None or not grant.per_symbol:
        return grant.limits(symbol)
    wanted = canonical(symbol)
    names = sorted(s for s in grant.per_symbol if s == symbol or canonical(s) == wanted)
    if len(names) > 1:
        return deny("symbols", f"the policy has overrides for {', '.join(names)}, which are one "
                    "market at the exchange; keep one")
    return grant.limits(names[0] if names else symbol)


def order_notional(
    intent: Intent, ref: Decimal | None, instruments: Mapping[str, Instrument],
) -> Decimal | str:
    """The order's exposure in quote units (what max_order_notional and notional budgets
    count), or why it cannot be known (the rule then refuses)."""
    if intent.quote_quantity is not None:
        return intent.quote_quantity
    if intent.quantity is None:
        return "notional cannot be known for this order (no quantity)"
    instrument = intent.instrument
    if instrument is None and intent.symbol is not None:
        instrument = instruments.get(intent.symbol)
    if instrument is None:
        return (f"the contract size of {intent.symbol} is unknown (the exchange's instruments "
                "could not be read); refused, never guessed")
    if instrument.kind == "option":
        return f"{intent.symbol} is an option: no notional rule can price it; refused"
    notional = instrument.notional(intent.quantity, intent.price if intent.price is not None else ref)
    if notional is None:
        return "notional cannot be known for this order (no price and no reference price)"
    return notional


def _charges(
    grant: Grant, client: str, account: str, intents: tuple[Intent, ...], ctx: EvalContext
) -> tuple[Charge, ...] | Decision:
    charges: list[Charge] = []
    for budget in grant.budgets:
        if budget.max_orders is not None:
            charges.append(Charge(
                budget.rule("orders"), budget.storage_key("orders", client, account),
                Decimal(len(intents)), budget.window_s, Decimal(budget.max_orders),
            ))
        if budget.max_notional is not None:
            total = Decimal(0)
            for intent in intents:
                ref = ctx.reference_prices.get(intent.symbol) if intent.symbol is not None else None
                notional = order_notional(intent, ref, ctx.instruments)
                if isinstance(notional, str):
                    return deny(budget.rule("notional"), notional)
                total += notional
            charges.append(Charge(
                budget.rule("notional"), budget.storage_key("notional", client, account),
                total, budget.window_s, budget.max_notional,
            ))
    for charge in charges:
        used = ctx.budget_usage.get(charge.rule, Decimal(0))
        if used + charge.amount > charge.limit:
            return Decision("rate_limited", charge.rule,
                            f"{charge.rule}: {used} used + {charge.amount} exceeds {charge.limit}",
                            charges=(charge,))
    return tuple(charges)


def over_budget(decision: Decision, charge: Charge, total: Decimal) -> Decision:
    """The decision once the store refused ``charge``; a report-mode grant stays allowed and
    records the refusal as would_deny."""
    denial = Decision("rate_limited", charge.rule,
                      f"{charge.rule}: {total} would exceed {charge.limit} in the last {charge.window_s}s",
                      charges=(charge,))
    if decision.report:
        if decision.would_deny is not None:
            return decision
        return replace(decision, rule="report", message=f"report mode: would deny ({charge.rule})",
                       would_deny=denial)
    return denial


def _list(values: frozenset[str]) -> str:
    return ", ".join(sorted(values)) or "nothing"
