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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


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
