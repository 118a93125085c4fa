"""Exchange cool-downs: after a 429, a 418 (an IP ban) or any ``Retry-After``, the account
pauses on every worker and host until the exchange's cool-down ends.

Hammering a rate-limited key is how a 429 becomes a ban (418 bans escalate from two minutes to
three days where an exchange publishes them), so once the exchange says "slow down" nothing
more is sent on that account, cancels included: the exchange would refuse those too, and every
refused request extends the ban. The pause is a state-store flag whose TTL is the cool-down,
so it is shared across workers and hosts and ends by itself.

Each worker caches what the store said for ``CACHE_S``: another worker's pause is in force here
within that time, and so is an operator clearing the flag early. The worker that met the 429
knows at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from proxy import exchanges
from proxy.errors import AccountPaused, NotReady
from proxy.state import StateStore

DEFAULT_429_S = 30
"""Cool-down after a 429 that names none: weight budgets count per minute; half is enough."""
DEFAULT_418_S = 120
"""Cool-down after a 418 that names none: the shortest published IP ban is two minutes."""
MAX_PAUSE_S = 3 * 86400
"""The longest cool-down honoured: the longest published ban. A larger Retry-After is capped."""
CACHE_S = 0.25
RULE = "exchange_cooldown"


@dataclass(frozen=True)
class Cooldown:
    """How long to stay away from the exchange and why (for the refusal and the audit)."""

    seconds: int
    status: int
    named: bool  # the exchange named the duration (Retry-After) rather than our default


def parse_retry_after(value: str, now_s: float) -> int | None:
    """``Retry-After`` as whole seconds from ``now_s``: delta-seconds or an HTTP date (RFC 9110
    §10.2.3). None if it is neither."""
    text = value.strip()
    if text.isdigit():
        return int(text[:12])
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0, math.ceil(when.timestamp() - now_s))


def cooldown(status: int, headers: Iterable[tuple[str, str]], now_s: float) -> Cooldown | None:
    """The cool-down an exchange answer asks for, or None. Pure: the clock is an argument."""
    values = [v for k, v in headers if k.lower() == "retry-after"]
    seconds = parse_retry_after(values[0], now_s) if values else None
    named = seconds is not None
    if seconds is None:
        if status == 429:
            seconds = DEFAULT_429_S
        elif status == 418:
            seconds = DEFAULT_418_S
        else:
            return None
    return Cooldown(max(1, min(seconds, MAX_PAUSE_S)), status, named=named)


def pause_flag(account: str) -> str:
    """The state-store flag of an account's exchange cool-down (length-prefixed name); also of
    an IP-wide one, named by :func:`egress_scope`."""
    return f"pause|{len(account)}:{account}"


def egress_scope(exchange: str, base_url: str) -> str | None:
    """What the exchange counts per IP for this account: ``exchange@host`` (every account of
    that exchange behind this proxy shares the proxy's address), or None where it counts per
    key (the exchange declares which: ``capabilities.ip_wide_limits``). The ``@`` keeps it apart
    from account names."""
    known = exchanges.find(exchange)
    if known is None or not known.capabilities.ip_wide_limits:
        return None
    return f"{exchange}@{urlsplit(base_url).hostname or ''}"


class AccountPauses:
    """Shared account pauses. ``store`` None: pauses are local to this process."""

    def __init__(
        self, store: StateStore | None, *, clock: Callable[[], float] = time.time,
        on_store_error: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._cache: dict[str, tuple[float, float]] = {}  # account -> (read at, pause end; epoch s)
        self._on_store_error = on_store_error

    async def check(self, account: str, scope: str | None = None) -> None:
        """Raise AccountPaused (with Retry-After) while ``account`` is cooling down, or its
        IP-wide ``scope`` (:func:`egress_scope`) is banned."""
        now = self._clock()
        until = await self._until(account, now)
        wide = 0.0 if scope is None else await self._until(scope, now)
        if wide > now and wide >= until:  # the later end is the one the bot must wait for
            raise self._refusal(account, wide, now, scope)
        if until > now:
            raise self._refusal(account, until, now)

    async def _until(self, name: str, now: float) -> float:
        cached = self._cache.get(name)
        if cached is not None and (self.store is None or now - cached[0] < CACHE_S):
            return cached[1]
        if self.store is None:
            return 0.0
        try:
            value = await self.store.get_flag(pause_flag(name))
        except NotReady:
            if self._on_store_error is not None:
                self._on_store_error("pause_check")
            raise
        until = 0.0 if value is None else _until_from(value)
        self._cache[name] = (now, until)
        return until

    async def pause(self, account: str, cool: Cooldown) -> float:
        """Start (or extend, never shorten, here or on any other worker) the account's
        cool-down; returns its end. A store failure keeps the pause local and is reported,
        never raised: the bot still gets the exchange's answer."""
        now = self._clock()
        until = now + cool.seconds
        known = self._cache.get(account, (0.0, 0.0))[1]
        if until <= known:
            return known
        self._cache[account] = (now, until)
        if self.store is not None:
            try:
                value = f"{until:.3f}|{cool.status}"
                # atomic in the store: a longer pause set by another worker is never shortened
                kept = await self.store.extend_flag(pause_flag(account), value, ttl_s=cool.seconds)
            except NotReady:
                if self._on_store_error is not None:
                    self._on_store_error("pause_set")
            else:
                until = max(until, _until_from(kept))
                self._cache[account] = (now, until)
        return until

    @staticmethod
    def _refusal(account: str, until: float, now: float, scope: str | None = None) -> AccountPaused:
        wait = max(1, math.ceil(until - now))
        if scope is not None:
            exchange, _, host = scope.partition("@")
            return AccountPaused(
                f"account {account} is paused for {wait} s: {exchange} banned this proxy's IP address "
                f"at {host}, which every {exchange} account here shares; nothing was sent; retry "
                "after the cool-down", rule=RULE, retry_after=wait,
            )
        return AccountPaused(
            f"account {account} is paused for {wait} s: the exchange asked the proxy to back off "
            "(rate limit or ban); nothing was sent; retry after the cool-down",
            rule=RULE, retry_after=wait,
        )


def _until_from(value: str) -> float:
    head = value.split("|", 1)[0]
    try:
        return float(head)
    except ValueError:
        return 0.0
