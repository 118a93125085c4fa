"""Hot reload of the policy directory, on SIGHUP and on change (polled every second).

A new set is loaded and validated completely off the event loop, then swapped in with one
assignment (``apply``), so a request sees either the old set or the new one, never a mix. An
invalid new set leaves the old one in force and says why: an error log line, the
``proxy_policy_reload_errors_total`` metric and ``last_error`` (shown on /readyz as detail,
without making the worker unready: the old policies still answer correctly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from proxy.errors import PolicyError
from proxy.ops.metrics import Metrics
from proxy.policy.loader import dir_digest, load_dir
from proxy.policy.model import PolicySet

log = logging.getLogger("proxy.policy")

POLL_S = 1.0


class PolicyReloader:
    def __init__(
        self, directory: Path, known_accounts: set[str], current: PolicySet,
        apply: Callable[[PolicySet], None], metrics: Metrics, *, poll_s: float = POLL_S,
    ) -> None:
        self.directory = directory
        self.known_accounts = known_accounts
        self.version = current.version
        self.apply = apply
        self.metrics = metrics
        self.poll_s = poll_s
        self.last_error: str | None = None
        self._digest: str | None = None
        self._wake = asyncio.Event()

    def request(self) -> None:
        """SIGHUP: reload now, even if nothing seems to have changed."""
        self._digest = None
        self._wake.set()

    def detail(self) -> dict[str, object]:
        return {"policy_version": self.version, "policy_reload_error": self.last_error}

    async def run(self) -> None:
        self._digest = await asyncio.to_thread(self._safe_digest)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()
            await self.check()

    async def check(self) -> bool:
        """Reload if the files changed (or a reload was requested); True if a new set is in force."""
        digest = await asyncio.to_thread(self._safe_digest)
        if digest is not None and digest == self._digest:
            return False
        self._digest = digest
        try:
            policies = await asyncio.to_thread(load_dir, self.directory, self.known_accounts)
        except PolicyError as exc:
            self._failed("; ".join(exc.problems))
            return False
        except OSError as exc:
            self._failed(f"{self.directory}: cannot be read ({exc.strerror}); fix its permissions")
            return False
        self.last_error = None
        if policies.version == self.version:
            return False
        self.apply(policies)
        log.info("policies reloaded: version %s -> %s, %d clients", self.version, policies.version,
                 len(policies.clients))
        self.version = policies.version
        self.metrics.inc("proxy_policy_reloads_total", help="policy sets swapped in by hot reload")
        return True

    def _failed(self, why: str) -> None:
        if why != self.last_error:
            log.error("policy reload refused; version %s stays in force: %s", self.version, why)
        self.last_error = why
        self.metrics.inc("proxy_policy_reload_errors_total",
                         help="policy reloads refused because the new set is invalid")

    def _safe_digest(self) -> str | None:
        try:
            return dir_digest(self.directory)
        except OSError:
            return None
