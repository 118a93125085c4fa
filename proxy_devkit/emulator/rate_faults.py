"""A fault switch for emulators: answer the next requests with a rate limit or a ban.

``state.faults.arm(429, retry_after="5")`` makes the next request (``count`` of them) get a 429
with ``Retry-After: 5`` and the exchange's own error body, as the real exchange does when a key
or IP is over its limit (Binance also answers 418 when it bans an IP). The request is recorded
as received and refused, so tests can see exactly what reached the "exchange".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Fault:
    status: int
    body: Any
    retry_after: str | None


@dataclass
class FaultSwitch:
    _armed: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, status: int, body: Any, *, retry_after: str | None = None, count: int = 1) -> None:
        with self._lock:
            self._armed.extend(Fault(status, body, retry_after) for _ in range(count))

    def take(self) -> Fault | None:
        with self._lock:
            return self._armed.pop(0) if self._armed else None

    def headers(self, fault: Fault) -> dict[str, str]:
        return {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
