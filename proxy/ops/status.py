"""What the admin listener reports for the whole ``serve``, whichever worker answers.

All workers accept on one admin socket, so a scrape lands on any of them. Each worker
publishes its readiness to the run directory (proxy/ops/run_dir.py) every ``PUBLISH_S`` and at
exit, and ``/readyz`` merges each live worker's (proxy/ops/readiness.py). ``/metrics`` sums
the files every worker's metrics are written to as they change (proxy/ops/metrics.py), so a
scrape shows every request counted so far, whichever worker answers. With one worker there is
no run directory and the worker answers from memory alone, in the same format.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from proxy.ops import readiness as readiness_merge
from proxy.ops.metrics import Metrics
from proxy.ops.readiness import WorkerReadiness
from proxy.ops.run_dir import RunDir

log = logging.getLogger("proxy.status")

PUBLISH_S = 1.0
#: a worker whose status is older than this is reported not ready (its loop may be stuck)
STALE_S = 5.0


class ProxyStatus:
    def __init__(self, metrics: Metrics, readiness: Callable[[], list[str]],
                 details: Callable[[], dict[str, object]], run_dir: RunDir | None) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.details = details
        self.run_dir = run_dir
        self.pid = os.getpid()
        self._write_failed = False

    def _own(self) -> WorkerReadiness:
        return WorkerReadiness(str(self.pid), tuple(self.readiness()), self.details())

    def publish(self) -> None:
        """Write this worker's status (a no-op without a run directory)."""
        if self.run_dir is None:
            return
        own = self._own()
        doc: dict[str, Any] = {
            "pid": self.pid, "written": time.time(), "mono": time.monotonic(),
            "reasons": list(own.reasons), "details": dict(own.details),
        }
        try:
            self.run_dir.write_worker(self.pid, doc)
            self._write_failed = False
        except OSError as exc:
            if not self._write_failed:  # once per outage, not every second
                log.warning("cannot publish worker status to %s: %s", self.run_dir.path, exc)
            self._write_failed = True

    async def run(self) -> None:
        """Publish every ``PUBLISH_S`` until cancelled."""
        while True:
            self.publish()
            await asyncio.sleep(PUBLISH_S)

    def metrics_text(self) -> str:
        return self.metrics.render()

    def readyz(self) -> tuple[int, dict[str, object]]:
        others: list[WorkerReadiness] = []
        if self.run_dir is not None:
            workers = self.run_dir.read_workers()
            live = self.run_dir.read_live()
            now = time.monotonic()
            for pid in sorted(live if live is not None else workers):
                if pid == self.pid:
                    continue
                doc = workers.get(pid)
                others.append(_readiness(pid, doc, now))
        ready, body = readiness_merge.merge(self._own(), others, STALE_S)
        return (200 if ready else 503), body


def _readiness(pid: int, doc: dict[str, Any] | None, now: float) -> WorkerReadiness:
    """A worker's status from its file; without a (readable) file it has not reported yet."""
    if doc is None:
        return WorkerReadiness(str(pid), age_s=None)
    reasons, details, mono = doc.get("reasons"), doc.get("details"), doc.get("mono")
    if not isinstance(reasons, list) or not isinstance(details, dict) or not isinstance(mono, (int, float)):
        return WorkerReadiness(str(pid), age_s=None)
    return WorkerReadiness(str(pid), tuple(str(r) for r in reasons), details, max(0.0, now - mono))
