"""What an emulator received, kept for tests to inspect."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    accepted: bool
    error: str = ""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Recorder:
    """A thread-safe list of received requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Received] = []

    def add(self, item: Received) -> None:
        with self._lock:
            self._items.append(item)

    def all(self) -> list[Received]:
        with self._lock:
            return list(self._items)

    def paths(self) -> list[str]:
        return [r.path for r in self.all()]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
