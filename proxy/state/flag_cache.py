"""Shared flags (kill switches, exchange cool-downs) served from memory.

Every order checks several flags. Reading them from the store on the request path costs a
thread hop each, and a cache that expires for every in-flight request at once makes them all
wait together. Here one background task per cache re-reads the flags in use every
``REFRESH_S``; requests read memory. The bound: a request never acts on a value read more than
``MAX_AGE_S`` ago. When the refresher falls behind (store slow or down), the request reads the
store itself, so an unreachable store still refuses (fail closed) within that bound. A flag
set or cleared by any worker or host is therefore in force everywhere within ``MAX_AGE_S``
plus one store read: under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.state.base import StateStore

REFRESH_S = 0.1
MAX_AGE_S = 0.5
FORGET_S = 60.0
"""A flag nobody asked for in this long is no longer refreshed."""


@dataclass
class _Entry:
    value: str | None
    read_at: float
    asked_at: float


class FlagCache:
    """Flags of one store for one worker. ``store`` None: only what ``put`` says (one process)."""

    def __init__(self, store: StateStore | None, *, clock: Callable[[], float] = time.monotonic,
                 refresh_s: float = REFRESH_S, max_age_s: float = MAX_AGE_S) -> None:
        self.store = store
        self._clock = clock
        self._refresh_s = refresh_s
        self._max_age_s = max_age_s
        self._entries: dict[str, _Entry] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, name: str) -> str | None:
        """The flag's value as read at most ``max_age_s`` ago. Raises NotReady when it must be
        read now and the store cannot answer."""
        now = self._clock()
        entry = self._entries.get(name)
        if entry is not None:
            entry.asked_at = now
            if self.store is None or now - entry.read_at < self._max_age_s:
                self._ensure_refresher()
                return entry.value
        if self.store is None:
            return None
        value = await self.store.get_flag(name)
        self._entries[name] = _Entry(value, now, now)
        self._ensure_refresher()
        return value

    def peek(self, name: str) -> str | None:
        """The value in memory, however old (None: never read or put)."""
        entry = self._entries.get(name)
        return None if entry is None else entry.value

    def put(self, name: str, value: str | None) -> None:
        """What this worker itself just wrote (in force here at once)."""
        now = self._clock()
        self._entries[name] = _Entry(value, now, now)

    def _ensure_refresher(self) -> None:
        if self.store is not None and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        store = self.store
        assert store is not None
        while self._entries:
            await asyncio.sleep(self._refresh_s)
            started = self._clock()
            names = [n for n, e in self._entries.items() if started - e.asked_at < FORGET_S]
            for name in set(self._entries) - set(names):
                del self._entries[name]
            values = await asyncio.gather(*(store.get_flag(n) for n in names), return_exceptions=True)
            for name, value in zip(names, values, strict=True):
                entry = self._entries.get(name)
                if isinstance(value, BaseException) or entry is None or entry.read_at > started:
                    continue  # an error leaves the entry to age out; a newer put wins
                entry.value, entry.read_at = value, started

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
