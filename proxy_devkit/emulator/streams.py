"""Private-stream plumbing shared by the emulators: who is subscribed to what, and what each
socket received, so tests can prove a message never reached the exchange."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Subscriber:
    """One authenticated private-stream connection."""

    api_key: str
    topics: set[str] = field(default_factory=set)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)


@dataclass
class StreamHub:
    subscribers: list[Subscriber] = field(default_factory=list)
    #: every message a stream client sent, parsed (the emulator's own record)
    received: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: the event loop the streams run on (REST handlers share it)
    loop: asyncio.AbstractEventLoop | None = None

    def publish(self, topic: str, message: dict[str, Any]) -> None:
        """Queue ``message`` for every subscriber of ``topic`` (safe from any thread)."""
        for sub in list(self.subscribers):
            if topic in sub.topics:
                if self.loop is not None and self.loop.is_running():
                    self.loop.call_soon_threadsafe(sub.queue.put_nowait, message)
                else:
                    sub.queue.put_nowait(message)

    def record(self, message: Any) -> None:
        with self.lock:
            self.received.append(message)
