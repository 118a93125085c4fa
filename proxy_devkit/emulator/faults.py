"""A fault switch for any emulator: lose the answer to a request, before or after the exchange
acted on it, so tests can show what the proxy does when it cannot know an order's fate.

``faults = Faults(); app = faults.wrap(app)`` then, in a test::

    faults.arm("POST", "/api/v3/order", when="after")   # the order is placed, the answer lost
    faults.arm("POST", "/api/v3/order", when="before")  # nothing placed, no answer either

An armed fault fires on the next matching request only (``times`` to change that). "Losing" an
answer means holding the connection silent for ``hold_s`` seconds (longer than the proxy's
upstream timeout) and then ending without a proper response, as a dead network path would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class _Armed:
    method: str
    path: str
    when: Literal["before", "after"]
    times: int
    hold_s: float


class Faults:
    """Thread-safe: tests arm faults from their thread while the emulator serves in its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []
        self.fired: list[tuple[str, str, str]] = []

    def arm(
        self, method: str, path: str, *, when: Literal["before", "after"] = "after",
        times: int = 1, hold_s: float = 3.0,
    ) -> None:
        with self._lock:
            self._armed.append(_Armed(method, path, when, times, hold_s))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def _take(self, method: str, path: str) -> _Armed | None:
        with self._lock:
            for fault in self._armed:
                if fault.method == method and fault.path == path and fault.times > 0:
                    fault.times -= 1
                    self.fired.append((method, path, fault.when))
                    return fault
        return None

    def wrap(self, app: App) -> App:
        async def faulty(scope: Scope, receive: Receive, send: Send) -> None:
            fault = self._take(scope.get("method", ""), scope.get("path", "")) \
                if scope["type"] == "http" else None
            if fault is None:
                await app(scope, receive, send)
                return
            if fault.when == "after":
                async def swallow(message: Message) -> None:
                    return None

                await app(scope, receive, swallow)  # the exchange acts; its answer goes nowhere
            await asyncio.sleep(fault.hold_s)  # by now the proxy has given up on this answer

        return faulty
