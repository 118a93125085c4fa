"""Requests without a valid token: rate limited per source address, audited in aggregate.

Each refused request used to be one fsynced audit record (~950 bytes) and one log line: one
client at 1,000 requests/s wrote ~77 GiB a day, and a full audit disk stops all trading. Here
each source address gets a token bucket (beyond it: 429 ``rate_limited``, no work at all), and
the refusals of one source are written as one ``phase = "aggregate"`` record per interval with
their count, and one log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proxy.guards.bucket import TokenBucket
from proxy.ops.metrics import Metrics

log = logging.getLogger("proxy.decision")

#: sources remembered at once; beyond, new sources share one bucket (an attacker with many
#: addresses cannot grow this table without bound)
MAX_SOURCES = 10_000
OVERFLOW = "(other sources)"


@dataclass
class _Source:
    bucket: TokenBucket
    refused: int = 0
    limited: int = 0
    first: str = ""


class UnauthenticatedRefusals:
    """One per worker. ``admit(source)`` says whether to answer 401 (True) or 429 (False)."""

    def __init__(
        self, write: Callable[[Mapping[str, Any]], Awaitable[None]], *, rate_per_s: float = 10.0,
        burst: int = 20, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._write = write
        self.rate, self.burst, self.interval_s = rate_per_s, burst, interval_s
        self._clock = clock
        self._sources: dict[str, _Source] = {}
        self._metrics = metrics

    def admit(self, source: str) -> bool:
        """Count one refusal from ``source``; False when its bucket is empty (answer 429)."""
        now = self._clock()
        key = source if source in self._sources or len(self._sources) < MAX_SOURCES else OVERFLOW
        entry = self._sources.get(key)
        if entry is None:
            entry = self._sources[key] = _Source(TokenBucket.full(self.rate, self.burst, now), first=_now())
        if entry.bucket.take(now):
            entry.refused += 1
            return True
        entry.limited += 1
        return False

    def retry_after(self) -> int:
        return max(1, round(1 / self.rate))

    async def run(self) -> None:
        """Write the aggregates every interval (until cancelled; then call :meth:`flush`)."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> None:
        """One record (and one log line) per source with refusals since the last flush. A
        source's bucket is kept while it is still refilling, so a flush grants no new burst."""
        until, now = _now(), self._clock()
        counted = []
        for source, entry in list(self._sources.items()):
            if entry.refused or entry.limited:
                counted.append((source, entry.refused + entry.limited, entry.limited, entry.first))
            entry.refused = entry.limited = 0
            entry.first = until
            if entry.bucket.is_full(now):
                del self._sources[source]  # full again: nothing to remember
        for source, count, limited, since in counted:
            record = {
                "ts": until, "phase": "aggregate", "request_id": uuid.uuid4().hex, "client": None,
                "account": None, "exchange": None, "method": None, "path": None, "category": None,
                "decision": "deny", "rule": "unauthenticated", "client_order_id": None,
                "upstream_status": None, "key_version": None, "source": source, "count": count,
                "rate_limited": limited, "since": since,
            }
            log.info("unauthenticated requests", extra={"fields": {
                "decision": "deny", "rule": "unauthenticated", "source": source, "count": count,
                "rate_limited": limited, "since": since}})
            try:
                await self._write(record)
            except Exception as exc:  # disk low or full: the count is lost, trading is not
                log.warning("aggregate audit record for %s (%d refusals) not written: %s", source, count,
                            type(exc).__name__)
                if self._metrics is not None:
                    self._metrics.inc("proxy_audit_dropped_total", (("reason", "aggregate"),), count,
                                      help="audit records given up to keep the disk's reserve for orders")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
