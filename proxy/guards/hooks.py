"""Exchange-side safety around each request: the hooks the pipeline calls, in one place.

Before sending: the client's inbound rate limits (policy ``rate_limit``), the account's exchange
cool-down (:mod:`proxy.guards.cooldowns`), the key-permission verdict
(:mod:`proxy.guards.key_vetting`) and the account's outbound weight budget
(:mod:`proxy.exchanges.weights`). After the exchange answers: start a cool-down on 429, 418 or
``Retry-After``; count upstream errors and nonce rejections. Refusals are contract errors
(``rate_limited`` / ``account_paused`` / ``not_ready``), so the pipeline audits them like any other.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from proxy import exchanges
from proxy.errors import AccountPaused, NotReady, RateLimited
from proxy.exchanges.weights import request_weight
from proxy.guards.cooldowns import AccountPauses, cooldown, egress_scope
from proxy.guards.key_vetting import KeyVetting
from proxy.guards.rate_limits import Hit, MemoryLimiter, WindowLimiter
from proxy.model.request import Outbound, Prepared
from proxy.ops.metrics import Metrics
from proxy.policy.model import ClientPolicy, Grant, RateLimit
from proxy.state import StateStore
from proxy.state.group_commit import Spend

log = logging.getLogger("proxy.guards.hooks")

_NONCE_SCAN_BYTES = 4096


def nonce_rejected(exchange: str, body: bytes) -> bool:
    """Whether an exchange answer says the nonce was too low or reused (the exchange declares
    the markers; some answer HTTP 200 with them)."""
    known = exchanges.find(exchange)
    markers = known.capabilities.nonce_rejections if known is not None else ()
    if not markers:
        return False
    head = body[:_NONCE_SCAN_BYTES]
    return any(m in head for m in markers)


def _who(*names: str) -> str:
    """Length-prefixed, so no client or account name can forge another's key."""
    return "|".join(f"{len(n)}:{n}" for n in names)


class ExchangeSafety:
    """One per worker. Without a shared ``limiter`` limits are per process (tests, no store)."""

    def __init__(
        self, *, store: StateStore | None, metrics: Metrics, limiter: WindowLimiter | None = None,
        vetting: KeyVetting | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.limiter: WindowLimiter = limiter if limiter is not None else MemoryLimiter()
        self.vetting = vetting
        self._clock = clock
        self.pauses = AccountPauses(store, clock=clock)  # store errors: counted by ObservedStore
        #: account -> what its exchange counts per IP (418 bans, request weight), if anything
        self._egress: dict[str, str] = {}
        self._urls: dict[str, tuple[str, str]] = {}  # account -> (exchange, base URL)

    def know_accounts(self, accounts: Iterable[tuple[str, str, str]]) -> None:
        """(name, exchange, base URL) of every account: which of them share an IP-wide ban
        and weight budget (proxy.guards.cooldowns.egress_scope)."""
        for name, exchange, base_url in accounts:
            self._urls[name] = (exchange, base_url)
            scope = egress_scope(exchange, base_url)
            if scope is not None:
                self._egress[name] = scope

    # ------------------------------------------------------------------ before sending

    async def admit_client(self, client: str, account: str, policy: ClientPolicy, grant: Grant) -> None:
        """The policy's inbound rate limits: per client (every account), then per grant."""
        for limit in policy.rate_limits:
            await self._spend(f"client|{_who(client)}", limit.amount, limit.window_s, 1,
                              "rate_limit.client", account, limit)
        for limit in grant.rate_limits:
            await self._spend(f"grant|{_who(client, account)}", limit.amount, limit.window_s, 1,
                              "rate_limit.grant", account, limit)

    async def check_pause(self, account: str) -> None:
        await self.pauses.check(account, self._egress.get(account))

    def paused_until(self, account: str) -> float:
        """When the account's cool-down (or its IP's ban) ends, as this worker knows (0: none)."""
        scope = self._egress.get(account)
        return max(self.pauses.known_until(account), self.pauses.known_until(scope) if scope else 0.0)

    async def paused(self, account: str) -> bool:
        """Whether the proxy's own requests for ``account`` (exchange clock, key checks) must
        wait: its cool-down or its IP ban, or a state store that cannot say (add no traffic
        then; the bots' requests are refused meanwhile anyway)."""
        try:
            await self.check_pause(account)
        except (AccountPaused, NotReady):
            return True
        return False

    async def observe_url(self, exchange: str, base_url: str, status: int,
                          headers: tuple[tuple[str, str], ...], body: bytes) -> None:
        """An answer to a public request of the proxy's own (a reference price), made for no
        one account: a cool-down it asks for applies to every account of that exchange at
        that base URL (public limits count per IP)."""
        if cooldown(status, headers, self._clock()) is None:
            return
        for name, (known_exchange, known_url) in list(self._urls.items()):
            if known_exchange == exchange and known_url == base_url:
                await self.observe(name, exchange, status, headers, body)

    def check_key(self, account: str, version: int) -> None:
        if self.vetting is not None:
            refusal = self.vetting.refusal(account, version)
            if refusal is not None:
                raise refusal

    def key_refusal(self, account: str, version: int, key: str) -> NotReady | None:
        """Why the pool key ``key`` (its KV path) may not sign now, or None."""
        return None if self.vetting is None else self.vetting.refusal(account, version, key)

    async def spend_weight(self, account: str, exchange: str, budget: int | None, prepared: Prepared) -> None:
        """The account's outbound budget in the exchange's request weights per minute."""
        spend = self.weight_spend(account, exchange, budget, prepared)
        if spend is not None:
            await self._spend(spend.key, budget or 0, 60, spend.cost, "rate_limit.account", account, None)

    def weight_spend(
        self, account: str, exchange: str, budget: int | None, prepared: Prepared
    ) -> Spend | None:
        """What ``spend_weight`` would charge, for the group commit to charge it in its batch."""
        if not budget:
            return None
        weight = request_weight(exchange, prepared.method, prepared.path, prepared.query, prepared.body)
        return self._weight(account, budget, weight)

    def spender(
        self, account: str, exchange: str, budget: int | None,
    ) -> Callable[[Outbound], Awaitable[None]]:
        """Charges one of the proxy's own requests for ``account`` (a reference-price lookup)
        to the account's weight budget: the exchange counts them like the bots' requests."""

        async def spend(out: Outbound) -> None:
            if not budget:
                return
            path, _, query = out.path_and_query.partition("?")
            weight = request_weight(exchange, out.method, path, query, out.body)
            charge = self._weight(account, budget, weight)
            if charge is not None:
                await self._spend(charge.key, budget, 60, charge.cost, "rate_limit.account", account, None)

        return spend

    def _weight(self, account: str, budget: int, weight: int) -> Spend | None:
        if weight <= 0:  # the exchange counts this request in another of its limits
            return None
        scope = self._egress.get(account)  # weight counted per IP: one budget for all
        key = f"weight|{_who(account)}" if scope is None else f"weight-ip|{_who(scope)}"
        return Spend(key, budget, 60, weight)

    def weight_refused(self, account: str, budget: int, retry_after: int) -> RateLimited:
        """The refusal for a weight spend the group commit found over budget."""
        return self._refused(Hit(False, retry_after), "rate_limit.account", account, budget, None)

    async def _spend(
        self, key: str, amount: int, window_s: int, cost: int, rule: str, account: str,
        limit: RateLimit | None,
    ) -> None:
        try:
            hit = await self.limiter.hit(key, amount, window_s, cost)
        except NotReady:
            self.store_error("rate_limit")
            raise
        if hit.allowed:
            return
        raise self._refused(hit, rule, account, amount, limit)

    def _refused(
        self, hit: Hit, rule: str, account: str, amount: int, limit: RateLimit | None
    ) -> RateLimited:
        self.metrics.inc("proxy_rate_limited_total", (("account", account), ("rule", rule)),
                         help="requests refused by a rate limit or weight budget, by rule")
        what = f"{limit.text}" if limit is not None else f"{amount} weight/minute on account {account}"
        return RateLimited(f"rate limit {what} reached; retry after {hit.retry_after} s",
                           retry_after=hit.retry_after, rule=rule)

    # ------------------------------------------------------------------ after the answer

    async def observe(self, account: str, exchange: str, status: int,
                      headers: tuple[tuple[str, str], ...], body: bytes) -> None:
        """Look at the exchange's answer (the bot gets it unchanged)."""
        if status >= 400:
            self.upstream_error(account, f"{status // 100}xx")
        if nonce_rejected(exchange, body):
            self.metrics.inc("proxy_nonce_rejections_total", (("account", account), ("exchange", exchange)),
                             help="exchange answers saying the nonce was too low or reused")
        cool = cooldown(status, headers, self._clock())
        if cool is None:
            return
        scope = self._egress.get(account) if status == 418 else None
        until = await self.pauses.pause(scope or account, cool)  # a 418 bans the IP: all accounts
        self.metrics.inc("proxy_account_pauses_total", (("account", account), ("status", str(status))),
                         help="exchange cool-downs started (429, 418 or Retry-After), by account and status")
        log.warning("%s paused for %d s until %.0f: the exchange answered %d%s",
                    f"account {account}" if scope is None else f"every account at {scope}",
                    cool.seconds, until, status, " with Retry-After" if cool.named else "")

    def upstream_error(self, account: str, kind: str) -> None:
        """``kind``: "4xx", "5xx", "unreachable" or "timeout"."""
        self.metrics.inc("proxy_upstream_errors_total", (("account", account), ("class", kind)),
                         help="exchange answers >= 400 and failed exchange calls, by account and class")

    def store_error(self, op: str) -> None:
        self.metrics.inc("proxy_state_store_errors_total", (("op", op),),
                         help="state-store calls that failed (the request was refused, fail closed)")


class ObservedStore:
    """A state store that counts its failures (NotReady from an unreachable store) in
    ``proxy_state_store_errors_total{op}``; everything else passes through."""

    def __init__(self, inner: StateStore, on_error: Callable[[str], None]) -> None:
        self._inner = inner
        self._on_error = on_error
        self._wrapped: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        wrapped = self._wrapped.get(name)
        if wrapped is not None:
            return wrapped
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        wrapped = self._wrapped[name] = self._count(name, attr)
        return wrapped

    def _count(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        on_error = self._on_error

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except NotReady as exc:
                if type(exc) is NotReady:  # not a lock timeout or a nonce-unit change
                    on_error(name)
                raise

        return call


def observe_store(store: StateStore | None, metrics: Metrics) -> StateStore | None:
    """``store`` with its failures counted in ``proxy_state_store_errors_total``."""
    if store is None:
        return None

    def count(op: str) -> None:
        metrics.inc("proxy_state_store_errors_total", (("op", op),),
                    help="state-store calls that failed (the request was refused, fail closed)")

    return cast(StateStore, ObservedStore(store, count))
