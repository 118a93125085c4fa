"""Staying logged in to Vault, and how long to trust memory when Vault is gone.

- Token renewal: a renewable token is renewed at 2/3 of its TTL; when renewal fails, or
  Vault renews it for less than 2/3 of what a fresh login gives (the role's max TTL is near),
  we log in again at once (AppRole gets a new token; a static token is re-read from its file).
- Grace period: while Vault is unreachable, workers keep signing with the keys in memory for
  ``vault.grace_period_s``; past it they answer 503 ``not_ready`` until Vault answers again.
  Fail closed: a key revoked in Vault during an outage would otherwise be used forever.

The decisions are pure functions of times given as arguments; the classes hold the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from proxy.errors import SecretSourceError, VaultUnreachable
from proxy.keys.vault import TokenLease

RENEW_AT = 2 / 3
Action = Literal["none", "renew", "login"]


def token_action(lease: TokenLease, age_s: float, login_ttl_s: int) -> Action:
    """What to do with a token ``age_s`` seconds after its lease ``lease`` was granted."""
    if lease.ttl_s <= 0 or age_s < lease.ttl_s * RENEW_AT:
        return "none"
    return "renew" if lease.renewable else "login"


def renewal_capped(renewed: TokenLease, login_ttl_s: int) -> bool:
    """Vault gave less than 2/3 of a fresh login's TTL: the max TTL is near, log in afresh."""
    return renewed.ttl_s < login_ttl_s * RENEW_AT


class _Source(Protocol):
    lease: TokenLease

    def login(self) -> None: ...

    def renew_self(self) -> TokenLease: ...


class TokenKeeper:
    """Keeps the source's Vault token alive; called from the refresh thread every few seconds."""

    def __init__(self, source: _Source, clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.clock = clock
        self.granted = clock()
        self.login_ttl_s = source.lease.ttl_s
        self.renewals = 0
        self.logins = 0

    def logged_in(self) -> None:
        self.granted = self.clock()
        self.login_ttl_s = self.source.lease.ttl_s
        self.logins += 1

    def login(self) -> None:
        self.source.login()
        self.logged_in()

    def maintain(self) -> Action:
        """Renew or log in again when due; raises SecretSourceError when neither works."""
        action = token_action(self.source.lease, self.clock() - self.granted, self.login_ttl_s)
        if action == "renew":
            try:
                renewed = self.source.renew_self()
            except VaultUnreachable:
                raise
            except SecretSourceError:
                self.login()
                return "login"
            self.granted = self.clock()
            self.renewals += 1
            if renewal_capped(renewed, self.login_ttl_s):
                self.login()
                return "login"
        elif action == "login":
            self.login()
        return action


@dataclass(frozen=True)
class VaultState:
    up: bool
    down_for_s: float
    grace_left_s: float
    last_error: str

    @property
    def expired(self) -> bool:
        return not self.up and self.grace_left_s <= 0

    def reason(self, grace_period_s: float) -> str:
        return (f"vault: unreachable for {self.down_for_s:.0f} s, past vault.grace_period_s "
                f"({grace_period_s:g} s); not signing until Vault answers again "
                f"(last error: {self.last_error})")


def vault_state(down_since: float | None, now: float, grace_period_s: float, last_error: str) -> VaultState:
    if down_since is None:
        return VaultState(True, 0.0, grace_period_s, "")
    down = now - down_since
    return VaultState(False, down, max(0.0, grace_period_s - down), last_error)


class VaultHealth:
    """Remembers since when Vault has been failing (``None``: it answered last time)."""

    def __init__(self, grace_period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_period_s = grace_period_s
        self.clock = clock
        self.down_since: float | None = None
        self.last_error = ""

    def ok(self) -> None:
        self.down_since, self.last_error = None, ""

    def failed(self, error: str) -> None:
        if self.down_since is None:
            self.down_since = self.clock()
        self.last_error = error

    def state(self) -> VaultState:
        return vault_state(self.down_since, self.clock(), self.grace_period_s, self.last_error)
