"""Serving the review page: bounded reads of the newest records, and a cached verify verdict.

A page view reads at most ``limit`` records per chain from the end of the trail, whatever its
length. Verifying is a full pass over the trail (about 115k records/s), so it runs in a thread,
at most once per ``verify_every_s``, only when someone looks at the page; views in between show
the last verdict with its time. Both run off the event loop, so bots are not held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

from proxy.audit import chain, page
from proxy.audit.review import newest
from proxy.audit.verify import VerifyReport, verify
from proxy.model.sensitive import Secret

DEFAULT_LIMIT = 2000
MAX_LIMIT = 20000
FIRST_VERIFY_WAIT_S = 5.0


class AuditReview:
    """One per worker; ``html(limit)`` is the page. Holds the chain key only to verify."""

    def __init__(
        self,
        directory: Path,
        key: Secret,
        *,
        verify_every_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self._key = key
        self.verify_every_s = verify_every_s
        self._clock = clock
        self._verdict: tuple[float, VerifyReport | Exception] | None = None
        self._running: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"AuditReview({str(self.directory)!r})"

    async def html(self, limit: int = DEFAULT_LIMIT) -> str:
        limit = max(1, min(limit, MAX_LIMIT))
        status = await self._status()
        now = chain.rfc3339(dt.datetime.fromtimestamp(self._clock(), dt.UTC))
        return await asyncio.to_thread(self._render, limit, status, now)

    def _render(self, limit: int, status: page.TrailStatus, now: str) -> str:
        """Reading and rendering, off the event loop (2,000 records take tens of ms)."""
        records = newest(self.directory, limit)
        return page.render(page.summarize(records, limit), status, generated=now)

    async def _status(self) -> page.TrailStatus:
        if self._running is not None and self._running.done():
            self._running = None  # e.g. its event loop is gone
        stale = self._verdict is None or self._clock() - self._verdict[0] >= self.verify_every_s
        if stale and self._running is None:
            self._running = asyncio.create_task(self._verify())
        if self._verdict is None and self._running is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._running), FIRST_VERIFY_WAIT_S)
        if self._verdict is None:
            return page.TrailStatus("unknown", "Verification is running; reload in a moment.")
        return _status_of(*self._verdict)

    async def _verify(self) -> None:
        try:
            report: VerifyReport | Exception = await asyncio.to_thread(
                verify, self.directory, self._key)
        except Exception as exc:  # shown on the page as "could not verify"
            report = exc
        self._verdict = (self._clock(), report)
        self._running = None


def _status_of(when: float, report: VerifyReport | Exception) -> page.TrailStatus:
    checked = chain.rfc3339(dt.datetime.fromtimestamp(when, dt.UTC))
    if isinstance(report, Exception):
        return page.TrailStatus(
            "unknown", f"The trail could not be verified ({type(report).__name__}).",
            checked=checked)
    counts = f"{report.records} records in {report.chains} chains, {report.segments} segments"
    details = [f"torn last record (crash while writing): {loc}" for loc in report.torn]
    details += [f"open chain (writer running, or crashed): {w}" for w in report.open_chains]
    pending = len(report.intents_without_outcome)
    if pending:
        details.append(f"{pending} intents without outcome in the whole trail "
                       "(run `audit verify` for the list)")
    if report.ok:
        return page.TrailStatus("ok", f"The trail verifies: {counts}.", tuple(details), checked)
    return page.TrailStatus(
        "failed", f"The trail FAILS verification: first bad record {report.first_bad}.",
        (counts, *details), checked)
