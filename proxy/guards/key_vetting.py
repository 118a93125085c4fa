"""Refuse exchange keys that can withdraw, where the exchange lets a key read its own permissions.

The proxy never sends a withdrawal (those endpoints are ``endpoint_forbidden``), but a key that
*can* withdraw is worth stealing from the proxy's memory; a trade-only key is not. So after
loading an account's key the proxy asks the exchange what the key may do and refuses to sign
with one that can withdraw, unless the account says ``unsafe_allow_withdraw_capable_key = true``.

Each exchange that has such an endpoint declares it (``capabilities.key_permissions``: a signed
read in its catalogue and the reading of its answer, in the exchange's module). The others are
not asked: their keys are used unchecked and the start-up log says so.

When the check cannot be done (exchange unreachable, an answer we cannot read) the account is
refused, fail closed, and the check is retried with backoff (2 s doubling to 60 s): a key we
could not vet is not used. A refused withdraw-capable key is asked about again every 60 s, so
switching withdrawals off at the exchange brings the account back without a restart.
A *rotated* key (a new version of a key that already passed) keeps serving while its check
runs, which takes one round trip, so a rotation causes no failed request.

Each key of a key pool is checked on its own (verdicts are per account and KV path): a pool key
that is refused or not checked yet is never leased, and the pool serves with the others. No
check is sent while the account is paused (an exchange cool-down); a check's own 429/418
starts one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from proxy import exchanges
from proxy.errors import NotReady, ProxyError
from proxy.exchanges.base import Credentials, Exchange
from proxy.exchanges.capabilities import PermissionProbe, Permissions
from proxy.model.request import Inbound, Stamp

log = logging.getLogger("proxy.guards.key_vetting")

CHECK_TIMEOUT_S = 5.0
RETRY_MAX_S = 60.0
RULE = "key_permissions"


def parse_answer(exchange: str, status: int, body: bytes) -> Permissions:
    """The key's permissions from ``exchange``'s answer; ValueError when it cannot be read (or
    the exchange has no permission probe)."""
    probe = exchanges.get(exchange).capabilities.key_permissions
    if probe is None:
        raise ValueError(f"{exchange} offers no way to read a key's permissions")
    return probe.parse(status, body)


class _Pool(Protocol):
    """What vetting needs of a key pool (proxy.keys.pool.KeyPool has it)."""

    @property
    def paths(self) -> tuple[str, ...]: ...

    @property
    def creds(self) -> list[Credentials | None]: ...


class _Account(Protocol):
    """What vetting needs of an account (proxy.pipeline.accounts.Account has it)."""

    @property
    def name(self) -> str: ...

    exchange: Exchange
    host: str
    creds: Credentials | None
    cfg: Any

    @property
    def pool(self) -> _Pool | None: ...


class _Sender(Protocol):
    async def send(self, base_url: str, out: Any) -> Any: ...


class _Guard(Protocol):
    """Exchange cool-downs (proxy.guards.hooks.ExchangeSafety)."""

    async def paused(self, account: str) -> bool: ...

    async def observe(self, account: str, exchange: str, status: int,
                      headers: tuple[tuple[str, str], ...], body: bytes) -> None: ...


@dataclass
class _Verdict:
    version: int
    allowed: bool
    reason: str = ""
    retry_at: float = 0.0
    failures: int = 0


#: one key of one account: (account, KV path of a pool key; "" for an account's single key)
_KeyId = tuple[str, str]


class KeyVetting:
    """Per key (an account's single key, or each key of its pool): which version passed the
    check, or why it is refused. A pool key that is refused is never leased
    (proxy.keys.pool.KeyPool.lease); the pool serves with the others."""

    def __init__(self, upstream: _Sender, *, clock: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 offset_ms: Callable[[str], int] = lambda account: 0) -> None:
        self.upstream = upstream
        self._clock = clock
        self._wall_ms = wall_ms
        #: the account's exchange clock offset, so the check is signed with the exchange's time
        self._offset_ms = offset_ms
        self._verdicts: dict[_KeyId, _Verdict] = {}
        self._passed: set[_KeyId] = set()   # keys that have had a version pass
        self._warned: set[str] = set()
        self._pools: dict[str, _Pool] = {}  # pool accounts seen by vet_all
        #: set by the worker: no check is sent while the account is paused (cool-down, IP ban),
        #: and a check's 429/418 starts one
        self.guard: _Guard | None = None

    def refusal(self, account: str, version: int, key: str = "") -> NotReady | None:
        """The reason this key version may not sign, or None. ``key``: the pool key's KV path.
        For a pool account asked without ``key``: None while any of its loaded keys may sign
        (the lease then picks one of those), else the first key's reason."""
        pool = self._pools.get(account) if key == "" else None
        if pool is not None:
            first: NotReady | None = None
            for path, creds in zip(pool.paths, pool.creds, strict=True):
                if creds is None:
                    continue
                why = self.refusal(account, creds.version, path)
                if why is None:
                    return None
                first = first or why
            return first or NotReady(f"account {account}: no key of its pool is loaded", rule=RULE)
        ident = (account, key)
        verdict = self._verdicts.get(ident)
        if verdict is not None and verdict.version == version:
            return None if verdict.allowed else NotReady(verdict.reason, rule=RULE)
        if ident in self._passed:
            return None  # a rotated key: checked within one round trip, see the module doc
        return NotReady(f"account {account}: {_which(key)} have not been checked yet; "
                        "retry shortly", rule=RULE)

    def refused(self) -> dict[str, str]:
        """Keys currently refused, with the reason (for /readyz): by account name for a single
        key, by "account key PATH" for a pool key."""
        return {(name if not key else f"{name} key {key}"): v.reason
                for (name, key), v in self._verdicts.items() if not v.allowed}

    def _keys(self, account: _Account) -> list[tuple[str, Credentials]]:
        pool = getattr(account, "pool", None)
        if pool is None:
            return [] if account.creds is None else [("", account.creds)]
        self._pools[account.name] = pool
        return [(path, creds) for path, creds in zip(pool.paths, pool.creds, strict=True)
                if creds is not None]

    async def vet_all(self, accounts: Iterable[_Account]) -> None:
        """Check every key whose current version has no verdict (or a failed check whose
        retry time has come), concurrently: every key of a pool, not just its first."""
        now = self._clock()
        due = []
        for account in accounts:
            for key, creds in self._keys(account):
                verdict = self._verdicts.get((account.name, key))
                if verdict is not None and verdict.version == creds.version and (
                    verdict.allowed or verdict.retry_at > now
                ):
                    continue
                due.append(self._vet(account, creds, key))
        if due:
            await asyncio.gather(*due)

    async def _vet(self, account: _Account, creds: Credentials, key: str = "") -> None:
        name, exchange = account.name, account.exchange.name
        ident = (name, key)
        which = _which(key)
        unsafe = bool(getattr(account.cfg, "unsafe_allow_withdraw_capable_key", False))
        probe = account.exchange.capabilities.key_permissions
        if probe is None:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("account %s: %s offers no way to read a key's permissions; make sure the "
                            "key cannot withdraw (the proxy cannot check)", name, exchange)
            self._set(ident, _Verdict(creds.version, True))
            self._passed.add(ident)  # a rotation must not wait for the next round
            return
        if self.guard is not None and await self.guard.paused(name):
            return  # asked at the next round after the cool-down; until then the pause refuses
        previous = self._verdicts.get(ident)
        failures = previous.failures if previous is not None and previous.version == creds.version else 0
        try:
            perms = await asyncio.wait_for(self._ask(account, creds, probe), CHECK_TIMEOUT_S)
        except Exception as exc:  # any failure to check: refuse the key (fail closed) and retry
            failures += 1
            delay = min(RETRY_MAX_S, 2.0 * 2 ** (failures - 1))
            reason = (f"account {name}: could not check {which} with {exchange} "
                      f"({_short(exc)}); the key is not used until it can be checked; "
                      f"retrying in {delay:.0f} s")
            log.warning(reason)
            self._set(ident, _Verdict(creds.version, False, reason, self._clock() + delay, failures))
            return
        if perms.can_withdraw and not unsafe:
            this = f"key {key}" if key else "this key"
            reason = (f"account {name}: the exchange says {this} can withdraw; "
                      "the proxy refuses to use it. "
                      "Create a trade-only key (withdrawals disabled) and rotate it in, or set "
                      "unsafe_allow_withdraw_capable_key = true on the account")
            log.error(reason)
            # asked again now and then: withdrawals may be switched off at the exchange
            self._set(ident, _Verdict(creds.version, False, reason, self._clock() + RETRY_MAX_S))
            return
        if perms.can_withdraw:
            log.critical("UNSAFE: account %s signs with a key that CAN WITHDRAW "
                         "(unsafe_allow_withdraw_capable_key = true)", name)
        if perms.ip_restricted is False:
            log.warning("account %s: %shas no IP restriction at %s; restrict it to the proxy's "
                        "addresses", name, f"key {key} " if key else "the key ", exchange)
        log.info("account %s: %sversion %d checked with %s: cannot withdraw%s", name,
                 f"key {key} " if key else "key ", creds.version, exchange,
                 "" if not perms.can_withdraw else " (no: allowed by unsafe flag)")
        self._set(ident, _Verdict(creds.version, True))
        self._passed.add(ident)

    def _set(self, ident: _KeyId, verdict: _Verdict) -> None:
        self._verdicts[ident] = verdict

    async def _ask(self, account: _Account, creds: Credentials, probe: PermissionProbe) -> Permissions:
        exchange = account.exchange
        prepared = exchange.prepare(Inbound("GET", probe.path, b"", (), b""))
        now_ms = self._wall_ms() + self._offset_ms(account.name)
        stamp = Stamp(now_ms=now_ms, nonce=now_ms, unique=str(uuid.uuid4()))
        if creds.key.remote:  # Vault Transit signs over the network: keep the event loop free
            outbound = await asyncio.to_thread(exchange.sign, prepared, creds, stamp, account.host)
        else:
            outbound = exchange.sign(prepared, creds, stamp, account.host)
        response = await self.upstream.send(account.cfg.base_url, outbound)
        if self.guard is not None:
            await self.guard.observe(account.name, exchange.name, response.status, response.headers,
                                     response.body)
        return probe.parse(response.status, response.body)


def _which(key: str) -> str:
    """How a message names the key's permissions: a pool key's by its path."""
    return f"the permissions of key {key}" if key else "the key's permissions"


def _short(exc: BaseException) -> str:
    """Our own messages as they are; anything else by type only (it could quote anything)."""
    text = str(exc) if isinstance(exc, ProxyError | ValueError) else ""
    return (text or type(exc).__name__)[:160]


def warn_unsafe_accounts(accounts: Iterable[Any]) -> None:
    """One loud line per account that allows a withdraw-capable key, at every start."""
    for acct in accounts:
        if getattr(acct, "unsafe_allow_withdraw_capable_key", False):
            log.critical("UNSAFE: account %s sets unsafe_allow_withdraw_capable_key = true: a key that "
                         "can withdraw will be used; use a trade-only key instead", acct.name)
