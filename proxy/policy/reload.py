"""Hot reload of the policy directory, on SIGHUP and on change (polled every second).

A new set is loaded off the event loop, then swapped in with one assignment (``apply``), so a
request sees either the old set or the new one, never a mix. The reloader remembers the digest
of the bytes it actually loaded (the set's ``version``), never a digest taken at some other
moment: a worker that starts, or restarts under ``serve --workers N``, and loads the files as
they are then, can never mistake files it has not loaded for loaded ones.

Loading is partial (:func:`proxy.policy.loader.load_dir`): a file that does not load holds its
client, refused outright until the file is fixed, while every other client gets its current
policy. A refused file is loud: an error log line, ``proxy_policy_reload_errors_total``, and
``policy_reload_error`` and ``clients_refused`` on /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from proxy.ops.metrics import Metrics
from proxy.policy.loader import dir_digest, load_dir
from proxy.policy.model import PolicySet

log = logging.getLogger("proxy.policy")

POLL_S = 1.0


def load_current(directory: Path, known_accounts: set[str]) -> PolicySet:
    """The policy files as they are now, partially (what a serving worker starts with)."""
    policies = load_dir(directory, known_accounts, partial=True)
    for warning in policies.warnings:
        log.warning("policy: %s", warning)
    if policies.problems:
        log.error("policy files that do not load (their clients are refused until fixed): %s",
                  "; ".join(policies.problems))
    return policies


class PolicyReloader:
    def __init__(
        self, directory: Path, known_accounts: set[str], current: PolicySet,
        apply: Callable[[PolicySet], None], metrics: Metrics, *, poll_s: float = POLL_S,
    ) -> None:
        self.directory = directory
        self.known_accounts = known_accounts
        self.current = current
        self.apply = apply
        self.metrics = metrics
        self.poll_s = poll_s
        #: the digest of the bytes ``current`` was loaded from (never recomputed elsewhere)
        self._digest: str | None = current.version
        self._wake = asyncio.Event()
        if current.problems:
            self._count_error()

    @property
    def version(self) -> str:
        return self.current.version

    @property
    def last_error(self) -> str | None:
        return "; ".join(self.current.problems) or None

    def request(self) -> None:
        """SIGHUP: reload now, even if nothing seems to have changed."""
        self._digest = None
        self._wake.set()

    def detail(self) -> dict[str, object]:
        detail: dict[str, object] = {"policy_version": self.version, "policy_reload_error": self.last_error}
        if self.current.held:
            detail["clients_refused"] = sorted(self.current.held)
        return detail

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()
            await self.check()

    async def check(self) -> bool:
        """Reload if the files differ from the ones loaded (or a reload was requested); True if
        a new set is in force."""
        digest = await asyncio.to_thread(self._safe_digest)
        if digest is not None and digest == self._digest:
            return False
        policies = await asyncio.to_thread(load_dir, self.directory, self.known_accounts, partial=True)
        policies = self._hold_unnamed(policies)
        self._digest = policies.version  # what was read, even if the files changed meanwhile
        if policies.problems:
            if policies.problems != self.current.problems:
                log.error("policy reload: files that do not load; their clients are refused until "
                          "fixed (%s): %s", ", ".join(sorted(policies.held)) or "no client named",
                          "; ".join(policies.problems))
            self._count_error()
        if policies.version == self.current.version and policies.held == self.current.held:
            return False
        for warning in policies.warnings:
            if warning not in self.current.warnings:
                log.warning("policy: %s", warning)
        previous = self.current.version
        self.current = policies
        self.apply(policies)
        log.info("policies reloaded: version %s -> %s, %d clients, %d refused", previous, policies.version,
                 len(policies.clients), len(policies.held))
        self.metrics.inc("proxy_policy_reloads_total", help="policy sets swapped in by hot reload")
        return True

    def _hold_unnamed(self, policies: PolicySet) -> PolicySet:
        """A file that no longer names its client (not valid TOML, say) still holds the client it
        was loaded for: that client has no valid policy now, and /readyz must say so."""
        failed = {p.split(": ", 1)[0] for p in policies.problems}
        extra = {name: policy.source for name, policy in self.current.clients.items()
                 if policy.source in failed and name not in policies.clients and name not in policies.held}
        extra.update({name: file for name, file in self.current.held.items()
                      if file in failed and name not in policies.clients and name not in policies.held})
        if not extra:
            return policies
        return dataclasses.replace(policies, held={**policies.held, **extra})

    def _count_error(self) -> None:
        self.metrics.inc("proxy_policy_reload_errors_total",
                         help="policy loads with files that do not load (their clients are refused)")

    def _safe_digest(self) -> str | None:
        try:
            return dir_digest(self.directory)
        except OSError:
            return None
