"""What the admin listener reports for the whole ``serve``, whichever worker answers.

All workers accept on one admin socket, so a scrape lands on any of them. Each worker
publishes its status to the run directory (proxy/ops/run_dir.py) every ``PUBLISH_S`` and at exit;
the one answering ``/metrics`` first publishes its own current values (so what a scrape has
shown is on disk, and a ``kill -9`` right after cannot take it back), then merges every
worker's snapshot with the retired totals (proxy/ops/metrics_merge.py). ``/readyz`` merges each
live worker's readiness (proxy/ops/readiness.py). With one worker there is no run
directory and the worker answers from memory alone, in the same format.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from proxy.ops import metrics_merge
from proxy.ops import readiness as readiness_merge
from proxy.ops.metrics import Metrics, Snapshot
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

    def publish(self, snap: Snapshot | None = None) -> None:
        """Write this worker's status (a no-op without a run directory)."""
        if self.run_dir is None:
            return
        own = self._own()
        doc: dict[str, Any] = {
            "pid": self.pid, "written": time.time(), "mono": time.monotonic(),
            "reasons": list(own.reasons), "details": dict(own.details),
            "metrics": metrics_merge.to_json(snap if snap is not None else self.metrics.snapshot()),
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
        own = self.metrics.snapshot()
        if self.run_dir is None:
            return metrics_merge.render({str(self.pid): own})
        self.publish(own)
        workers = self.run_dir.read_workers()           # the workers' files first,
        retired_pids, retired = self.run_dir.read_retired()  # then the totals (see run_dir.py)
        live = self.run_dir.read_live()
        snaps: dict[str, Snapshot] = {str(self.pid): own}
        for pid, doc in workers.items():
            if pid == self.pid or pid in retired_pids:
                continue
            try:
                snap = metrics_merge.from_json(doc.get("metrics"))
            except ValueError:
                continue
            if live is None or pid in live:
                snaps[str(pid)] = snap
            else:  # exited, not folded in yet: its counters still count, its gauges do not
                retired = metrics_merge.add(retired, snap)
        return metrics_merge.render(snaps, retired)

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
