"""The policy's edge to the world: builds the EvalContext and spends budgets (L2).

``evaluate`` stays pure; this module does the I/O around it: kill-switch flags from the state
store (served from memory, refreshed in the background by :mod:`proxy.state.flag_cache`, so a
switch is in force within ``MAX_AGE_S`` on every worker and host), reference prices from
:mod:`proxy.guards.prices`, and budget charges applied atomically with ``add_to_window(limit=...)``.

Static rules come before any exchange call: a request that the rules needing no price or
instrument (grant, categories, kill switches, symbols, sides, order types, time in force)
refuse makes the proxy ask the exchange nothing, so refused orders cannot be turned into
ticker or instrument traffic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any

from proxy.errors import AccountPaused, Forbidden, PolicyDenied, RateLimited, Refusal
from proxy.exchanges.tickers import ticker_market
from proxy.guards.instruments import Instruments
from proxy.guards.prices import ReferencePrices, Spend
from proxy.model.request import Instrument, Prepared
from proxy.policy.evaluate import (
    Charge,
    Decision,
    EvalContext,
    evaluate,
    instrument_symbols,
    over_budget,
    reference_symbols,
)
from proxy.policy.model import PolicySet
from proxy.state import StateStore
from proxy.state.flag_cache import MAX_AGE_S, FlagCache

log = logging.getLogger("proxy.policy")

FLAG_CACHE_S = MAX_AGE_S
_STORE_QUANTUM = Decimal("1e-18")


def kill_flag(kind: str, name: str) -> str:
    """The state-store flag name of a kill switch (``kind`` is "client" or "account")."""
    return f"kill|{kind}|{len(name)}:{name}"


class PolicyRuntime:
    """One per worker. ``store`` None: no kill switches and budgets cannot be enforced (a
    policy with budgets then refuses, fail closed)."""

    def __init__(
        self, store: StateStore | None, prices: ReferencePrices | None,
        clock: Callable[[], float] = time.monotonic, instruments: Instruments | None = None,
    ) -> None:
        self.store = store
        self.prices = prices
        #: contract sizes from the exchange's instruments endpoint (None: notional rules on
        #: instruments the request does not describe refuse)
        self.instruments = instruments
        self._clock = clock
        self._flags = FlagCache(store, clock=clock)
        self._static = StaticRules()

    async def context(
        self, policies: PolicySet, client: str, account: str, prepared: Prepared, *,
        exchange: Any, base_url: str, spend: Spend | None = None,
    ) -> EvalContext:
        """What ``evaluate`` needs beyond the request. Reference prices and instruments are
        looked up only when the static rules pass (``spend`` charges each price lookup to the
        account's weight budget; the instruments cache charges its own)."""
        canonical = canonical_symbols(exchange)
        context = EvalContext(
            canonical=canonical,
            kill_client=await self._flag(kill_flag("client", client)),
            kill_account=await self._flag(kill_flag("account", account)),
        )
        if static_denial(policies, client, account, prepared, context, self._static) is not None:
            return context  # refused without a price or an instrument: the exchange is not asked
        symbols = reference_symbols(policies, client, account, prepared, canonical)
        refs = {}
        if symbols and self.prices is not None:
            market = ticker_market(str(getattr(exchange, "name", "")), prepared)
            refs = await self.prices.prices(exchange, base_url, sorted(symbols), market, spend=spend)
        wanted = instrument_symbols(policies, client, account, prepared, canonical)
        instruments = {}
        if wanted and self.instruments is not None:
            instruments = await self.instruments.lookup(exchange, base_url, account, wanted)
        if not refs and not instruments:
            return context  # nothing read (most requests): no copy
        return replace(context, reference_prices=refs, instruments=instruments)

    async def _flag(self, name: str) -> bool:
        if self.store is None:
            return False
        return await self._flags.get(name) is not None

    async def charge(self, decision: Decision) -> Decision:
        """Spend the decision's budgets; the first one over its limit refuses (or, in report
        mode, is recorded as would_deny). Earlier charges of a refused request stay spent:
        the error is on the safe side."""
        if not decision.allowed or not decision.charges:
            return decision
        if self.store is None:
            return Decision("rate_limited", decision.charges[0].rule,
                            "budgets need a state store; none is configured")
        for charge in decision.charges:
            total = await self.store.add_to_window(charge.key, stored_amount(charge), charge.window_s,
                                                   limit=charge.limit)
            if total > charge.limit:
                return over_budget(decision, charge, total)
        return decision


def stored_amount(charge: Charge) -> Decimal:
    """A charge's amount in the store's units, rounded up (a budget is never under-counted)."""
    with localcontext() as exact:  # 10**-18 units of any amount: more than 28 digits
        exact.prec = 80
        amount: Decimal = charge.amount.quantize(_STORE_QUANTUM, rounding=ROUND_CEILING)
    return amount


def static_denial(
    policies: PolicySet, client: str, account: str, prepared: Prepared, context: EvalContext,
    static: StaticRules | None = None,
) -> Decision | None:
    """The refusal the rules that need no reference price or instrument make, or None:
    ``evaluate`` with the grant's size and price limits (caps, bands, budgets) taken away,
    enforced even in report mode (a report-mode refusal needs no price either)."""
    alone = (static or StaticRules()).policies(policies, client, account)
    decision = evaluate(alone or policies, client, account, prepared, context)
    return None if decision.allowed else decision


class StaticRules:
    """Per policy set, the set each (client, account) is judged by before any price is read:
    built once rather than (three dataclass copies) on every request. A reload swaps the
    whole set, which empties this cache at its first use."""

    def __init__(self) -> None:
        self._of: PolicySet | None = None
        self._sets: dict[tuple[str, str], PolicySet | None] = {}

    def policies(self, policies: PolicySet, client: str, account: str) -> PolicySet | None:
        """The grant without its size and price limits (None: no such grant, judged as is)."""
        if policies is not self._of:
            self._of, self._sets = policies, {}
        key = (client, account)
        if key not in self._sets:
            self._sets[key] = _bare(policies, client, account)
        return self._sets[key]


def _bare(policies: PolicySet, client: str, account: str) -> PolicySet | None:
    policy = policies.for_client(client)
    grant = policy.grant_for(account) if policy is not None else None
    if policy is None or grant is None:
        return None
    bare = replace(grant, max_order_qty=None, max_order_notional=None, price_band=None,
                   per_symbol={}, budgets=(), mode="enforce")
    return PolicySet({client: replace(policy, grants=(bare,))}, version=policies.version)


def with_instruments(prepared: Prepared, instruments: Mapping[str, Instrument]) -> Prepared:
    """``prepared`` with the instruments read from the exchange on its intents (what is signed
    and sent does not change)."""
    if not instruments:
        return prepared
    intents = tuple(
        replace(i, instrument=instruments.get(i.symbol or "", i.instrument)) if i.instrument is None else i
        for i in prepared.intents)
    return replace(prepared, intents=intents)


def canonical_symbols(exchange: Any) -> Callable[[str], str]:
    """The exchange module's alias resolution (``canonical_symbol``), else symbols as written."""
    fn = getattr(exchange, "canonical_symbol", None)
    return fn if callable(fn) else str


def refusal(decision: Decision) -> Refusal:
    """The contract error for a denial (docs/interface.md §5), naming its rule."""
    if decision.code == "forbidden":
        return Forbidden("no such account, or not granted to this client")
    if decision.code == "account_paused":
        return AccountPaused(decision.message, rule=decision.rule)
    if decision.code == "rate_limited":
        window = next((c.window_s for c in decision.charges if c.rule == decision.rule), 0)
        return RateLimited(decision.message, retry_after=max(1, min(window, 3600)) if window else 60,
                           rule=decision.rule)
    return PolicyDenied(decision.message, rule=decision.rule)


def log_would_deny(request_id: str, client: str, account: str, decision: Decision) -> None:
    """Report mode: the line a risk manager greps for before switching to enforce."""
    if decision.would_deny is not None:
        log.warning("would_deny", extra={"fields": {
            "request_id": request_id, "client": client, "account": account,
            "decision": "would_deny", "rule": decision.would_deny.rule,
            "message": decision.would_deny.message,
        }})
