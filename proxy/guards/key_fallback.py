"""A rotated key the exchange refuses: keep signing with the previous version for a while.

Rotating to a key the exchange does not know (a typo, not yet activated, already deleted)
used to take the account down at every proxy within two seconds, with no way back but a
second rotation. Now, when the exchange answers a request, or the permission check, signed with
the account's newest version as an invalid key or signature, the worker signs with the version
it used before for ``[keys] previous_key_grace_s`` (default 1 h), and says so in the log,
``/readyz`` ("keys_fallback") and ``keys status``. A newer version (``keys rollback``, or a
rotation to a key the exchange knows) ends it; so does the end of the grace period, after which
the newest version is used again.

Which answers mean "invalid key or signature" is each exchange's documented error codes
(each exchange's ``key_refusal_codes`` capability, the ones ccxt also maps to
AuthenticationError), or HTTP 401; never a
guess. Key pools are not covered: their other keys serve.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from proxy.exchanges.base import Credentials

log = logging.getLogger("proxy.guards.key_fallback")



def key_refused(codes: frozenset[str], status: int, body: bytes) -> bool:
    """True when the exchange's answer says the API key or its signature was not accepted:
    HTTP 401, or one of the exchange's ``key_refusal_codes`` (its capabilities)."""
    if status == 401:
        return True
    if not codes or len(body) > 64 * 1024 or not _may_name(codes, body):
        return False
    try:
        data: Any = json.loads(body)
    except ValueError:
        return False
    found: list[Any] = []
    if isinstance(data, dict):
        found += [data.get(k) for k in ("code", "retCode", "error", "reason")]
        inner = data.get("error")
        if isinstance(inner, dict):
            found.append(inner.get("code"))
        elif isinstance(inner, list):
            found += inner
    elif isinstance(data, list) and len(data) >= 2 and data[0] == "error":
        found.append(data[1])
    return any(str(code) in codes for code in found if isinstance(code, str | int))


def _may_name(codes: frozenset[str], body: bytes) -> bool:
    """False only when no code can be in the parsed answer, so most answers are never parsed
    here. Exact: without a backslash (no JSON escapes) and without a NUL byte (not UTF-16 or
    UTF-32), a string or integer the parser returns is a literal slice of the body (an integer's
    ``str`` is its JSON text, or ``0`` for ``-0``)."""
    if b"\\" in body or b"\x00" in body:
        return True
    return any(code.encode() in body for code in codes)


class _Account(Protocol):
    @property
    def name(self) -> str: ...

    creds: Credentials | None
    previous: Credentials | None
    pool: Any


@dataclass(frozen=True)
class Fallback:
    refused_version: int
    previous_version: int
    until: float
    until_text: str
    reason: str

    def describe(self, account: str) -> str:
        return (f"the exchange refused key version {self.refused_version} ({self.reason}); signing "
                f"with version {self.previous_version} until {self.until_text}; run `keys rollback "
                f"--account {account}` or rotate to a key the exchange knows")


class KeyFallbacks:
    """Per account of one worker: the version the exchange refused and until when the
    previous one signs instead."""

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self._clock = clock
        self._active: dict[str, Fallback] = {}

    def refused(self, account: _Account, version: int, reason: str) -> None:
        """The exchange refused ``version`` of ``account``'s key as invalid."""
        creds, previous = account.creds, account.previous
        if account.pool is not None or creds is None or previous is None or self.grace_s <= 0:
            return
        if version != creds.version or previous.version == version:
            return  # an older version refused, or nothing to fall back to
        current = self._active.get(account.name)
        if current is not None and current.refused_version == version:
            return
        until = datetime.now(UTC) + timedelta(seconds=self.grace_s)
        fallback = Fallback(version, previous.version, self._clock() + self.grace_s,
                            until.isoformat(timespec="seconds").replace("+00:00", "Z"), reason)
        self._active[account.name] = fallback
        log.error("account %s: %s", account.name, fallback.describe(account.name))

    def refused_by_name(self, accounts: Mapping[str, _Account]) -> Callable[[str, str, int, str], None]:
        """KeyVetting's ``on_refused``: (account, pool key path or "", version, reason)."""
        def refused(account: str, key: str, version: int, reason: str) -> None:
            if not key and (found := accounts.get(account)) is not None:
                self.refused(found, version, reason)
        return refused

    def signing(self, account: _Account) -> Credentials | None:
        """The credentials to sign with now: the previous version while a fallback holds."""
        creds = account.creds
        fallback = self._active.get(account.name)
        if fallback is None or creds is None:
            return creds
        if creds.version != fallback.refused_version:
            del self._active[account.name]
            log.info("account %s: key version %d is current; the fallback to version %d ended",
                     account.name, creds.version, fallback.previous_version)
            return creds
        if self._clock() >= fallback.until:
            del self._active[account.name]
            log.error("account %s: the grace period for key version %d is over; signing with it again "
                      "although the exchange refused it; run `keys rollback --account %s`",
                      account.name, fallback.refused_version, account.name)
            return creds
        previous = account.previous
        return previous if previous is not None and previous.version == fallback.previous_version else creds

    def detail(self) -> dict[str, str]:
        """For /readyz: account -> what is happening and what to do."""
        return {name: fb.describe(name) for name, fb in self._active.items()}
