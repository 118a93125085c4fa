"""Shared state (nonces, key locks, idempotent client order ids, windows, flags).

``open_store`` picks the backend from ``[state] backend``: "sqlite" (one host, several
processes, survives restarts) or "redis" (several hosts; Redis or Valkey). Both fail closed
with NotReady when the store cannot be reached.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from proxy.errors import LockTimeout, NonceUnitChanged
from proxy.state.base import (
    DEFAULT_LEASE_S,
    DEFAULT_RECORD_TTL_S,
    BeginResult,
    Conflict,
    IdempotencyScope,
    InFlight,
    KeyLease,
    NonceUnit,
    Owner,
    Replay,
    StateStore,
    StoredResponse,
    wall_clock_us,
)

__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_RECORD_TTL_S",
    "BeginResult",
    "Conflict",
    "IdempotencyScope",
    "InFlight",
    "KeyLease",
    "LockTimeout",
    "NonceUnit",
    "NonceUnitChanged",
    "Owner",
    "Replay",
    "StateStore",
    "StoredResponse",
    "open_store",
]


def open_store(
    backend: str,
    *,
    path: Path | None,
    url: str | None,
    clock: Callable[[], int] = wall_clock_us,
    prefix: str = "esp:",
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL",
) -> StateStore:
    """The configured backend. Raises ValueError for an unknown backend or a missing
    ``path``/``url`` (the config loader turns it into ConfigError naming the file).

    ``sqlite_synchronous``: "FULL" (default) survives power loss; "NORMAL" survives process
    crashes (kill -9) but may lose the last commits on power loss, and is several times faster.
    ``prefix`` namespaces redis keys (several proxies may share one Redis).
    """
    if backend == "sqlite":
        if path is None:
            raise ValueError('[state] backend = "sqlite" needs path')
        from proxy.state.sqlite_store import SqliteStateStore

        return SqliteStateStore(path, clock=clock, synchronous=sqlite_synchronous)
    if backend == "redis":
        if url is None:
            raise ValueError('[state] backend = "redis" needs url')
        from proxy.state.redis_store import RedisStateStore

        return RedisStateStore(url, clock=clock, prefix=prefix)
    raise ValueError(f'[state] backend must be "sqlite" or "redis", not {backend!r}')
