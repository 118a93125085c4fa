"""``/readyz`` for the whole proxy: pure merging of each worker's readiness.

With one worker the body is that worker's, unchanged: ``{"ready": true, ...details}`` or
``{"ready": false, "reasons": [...], ...details}``. With several, the proxy is ready only when
every live worker is, and has said so recently: a worker's status older than ``stale_after_s``
counts as not ready (it may be stuck), one that has not reported yet as starting. Reasons are
prefixed ``worker <pid>: ``; ``workers`` lists each worker's own verdict and policy version; the
details (Vault, stopped or refused accounts, exchange clocks, policy version) are the answering worker's, with
keys only other workers report added from them (lowest pid first).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from proxy.errors import NotReady


@dataclass(frozen=True)
class WorkerReadiness:
    pid: str
    reasons: tuple[str, ...] = ()
    details: Mapping[str, object] = field(default_factory=dict)
    age_s: float | None = 0.0     # how old the status is; None: the worker has not reported yet


def merge(own: WorkerReadiness, others: Sequence[WorkerReadiness], stale_after_s: float
          ) -> tuple[bool, dict[str, object]]:
    """(ready, /readyz body) for the answering worker ``own`` and the other live workers."""
    if not others:
        body: dict[str, object] = {"ready": not own.reasons}
        if own.reasons:
            body["reasons"] = list(own.reasons)
        return not own.reasons, {**body, **own.details}
    workers: list[dict[str, object]] = []
    reasons: list[str] = []
    details: dict[str, object] = dict(own.details)
    for w in sorted([own, *others], key=lambda w: _pid_order(w.pid)):
        mine = list(w.reasons)
        if w.age_s is None:
            mine = ["starting (no status reported yet)"]
        elif w.age_s > stale_after_s:
            mine = [f"no status for {w.age_s:.0f} s (stuck or overloaded)"]
        else:
            for key, value in w.details.items():
                details.setdefault(key, value)
        reasons += [f"worker {w.pid}: {r}" for r in mine]
        entry: dict[str, object] = {"pid": w.pid, "ready": not mine, "reasons": mine}
        if "policy_version" in w.details:  # which policy each worker enforces (after a reload)
            entry["policy_version"] = w.details["policy_version"]
        workers.append(entry)
    ready = not reasons
    body = {"ready": ready, **({"reasons": reasons} if reasons else {})}
    details.pop("ready", None)
    details.pop("reasons", None)
    return ready, {**body, **details, "workers": workers}


def _pid_order(pid: str) -> tuple[int, str]:
    return (int(pid), "") if pid.isdigit() else (0, pid)


@dataclass(frozen=True)
class AccountSigning:
    """One account as /readyz shows it: whether it can sign now, and if not, why."""

    name: str
    key_version: int | None
    why_not: str | None            # None: it can sign
    exchange_verdict: str          # the last verdict on its key, in the exchange's words
    paused_until: float = 0.0      # epoch seconds; 0: not paused


def accounts_detail(accounts: Iterable[AccountSigning], now: float) -> dict[str, dict[str, object]]:
    """``{"main": {"can_sign": false, "why": "...", ...}}``. An account that is paused
    (an exchange cool-down) cannot sign until the pause ends, whatever its key."""
    shown: dict[str, dict[str, object]] = {}
    for a in accounts:
        why = a.why_not
        entry: dict[str, object] = {"key_version": a.key_version, "exchange_verdict": a.exchange_verdict}
        if a.paused_until > now:
            until = datetime.fromtimestamp(a.paused_until, UTC).isoformat(timespec="seconds")
            entry["paused_until"] = until.replace("+00:00", "Z")
            why = why or f"paused until {entry['paused_until']}: the exchange asked the proxy to back off"
        shown[a.name] = {"can_sign": why is None, **({"why": why} if why else {}), **entry}
    return shown


class _Creds(Protocol):
    @property
    def version(self) -> int: ...


class _Account(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def creds(self) -> _Creds | None: ...

    @property
    def error(self) -> str: ...


class _Vetting(Protocol):
    def refusal(self, account: str, version: int) -> NotReady | None: ...

    def verdict(self, account: str) -> str: ...


class _Pauses(Protocol):
    def paused_until(self, account: str) -> float: ...


def signing(accounts: Iterable[_Account], vetting: _Vetting, pauses: _Pauses) -> Iterator[AccountSigning]:
    """Per account: can it sign now, and if not, why (docs/interface.md "Operators")."""
    for a in accounts:
        refusal = None if a.creds is None else vetting.refusal(a.name, a.creds.version)
        why = f"secret not loaded: {a.error or 'not read yet'}" if a.creds is None else (
            refusal.message if refusal is not None else None)
        yield AccountSigning(a.name, a.creds.version if a.creds else None, why,
                             vetting.verdict(a.name), pauses.paused_until(a.name))
