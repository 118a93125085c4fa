"""The audit disk's reserve: below a free-space watermark, records that can be given up are
refused, so the space left goes to orders and cancels (README "Audit disk")."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class _Gauge(Protocol):
    def set(self, name: str, labels: tuple[tuple[str, str], ...], value: float, *, help: str) -> None: ...


def expendable(record: Mapping[str, Any]) -> bool:
    """Records given up first when the disk runs low: aggregates, and decisions on anything
    but an order or a cancel. Outcomes of sent requests and order decisions are kept."""
    phase = record.get("phase")
    if phase == "aggregate":
        return True
    return phase == "decision" and record.get("category") not in ("trade", "cancel")


class DiskReserve:
    """Free space on the trail's file system against ``reserve_bytes`` (0: no reserve)."""

    def __init__(self, directory: Path, reserve_bytes: int) -> None:
        self.directory = directory
        self.reserve_bytes = reserve_bytes
        self._free: tuple[float, int | None] = (-1.0, None)

    def free_bytes(self) -> int | None:
        """Free space for the directory (unprivileged view), read at most once a second; None
        when it cannot be read."""
        now = time.monotonic()
        if now - self._free[0] >= 1.0:
            try:
                st = os.statvfs(self.directory)
                self._free = (now, st.f_bavail * st.f_frsize)
            except OSError:
                self._free = (now, None)
        return self._free[1]

    def below(self) -> bool:
        free = self.free_bytes()
        return free is not None and free < self.reserve_bytes

    def refuses(self, record: Mapping[str, Any]) -> bool:
        """This record is expendable and the disk is below the reserve."""
        return bool(self.reserve_bytes) and expendable(record) and self.below()

    def headroom(self, metrics: _Gauge | None = None) -> dict[str, object] | None:
        """Free space against the reserve, for /readyz (and a gauge); None when unknown."""
        free = self.free_bytes()
        if free is None:
            return None
        if metrics is not None:
            metrics.set("proxy_audit_free_bytes", (), free,
                        help="free bytes on the audit file system (the reserve is kept for orders)")
        below = free < self.reserve_bytes
        return {"free_bytes": free, "reserve_bytes": self.reserve_bytes,
                "state": "below_reserve: reads refused, orders and cancels served" if below else "ok"}
