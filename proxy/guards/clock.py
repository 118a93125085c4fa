"""Each window-based exchange's clock, as an offset from the host's, so a skewed host still signs
timestamps the exchange accepts.

Window-based exchanges reject a request whose timestamp is more than a few seconds (a receive
window of 5 to 60 s) from *their* clock. Per account, this asks the exchange's public
server-time endpoint (``capabilities.server_time``, declared by the exchange) a few times, NTP-style:
``offset = server_time - (t_send + t_recv) / 2``, drops samples whose round trip is too long to
say much, and keeps the median. The pipeline then stamps ``now_ms = host now + offset``; the
offset is anchored to the monotonic clock, so a later step of the host's wall clock is followed.

It measures once when the worker starts (readiness waits for that first round, at most
``FIRST_ROUND_S``) and then every ``interval_s`` (sooner while an account has no measurement).
Until an account's first good measurement its offset is 0: the host clock, as before; /readyz
``exchange_clock`` and the ``proxy_exchange_clock_offset_ms`` gauge show which accounts are
measured. A failed round keeps the last offset (clocks drift by milliseconds per hour, not
seconds). A window-based exchange that declares no server-time endpoint is signed with the host
clock.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from statistics import median_low
from typing import Protocol

from proxy.errors import ProxyError
from proxy.exchanges.base import Exchange
from proxy.exchanges.server_time import ServerTime
from proxy.model.request import Outbound
from proxy.ops.metrics import Metrics
from proxy.upstream import UpstreamResponse

log = logging.getLogger("proxy.guards.clock")

INTERVAL_S = 30.0
RETRY_S = 5.0
SAMPLES = 3
MAX_RTT_MS = 1000.0
FETCH_TIMEOUT_S = 2.0
FIRST_ROUND_S = 3.0


class Sender(Protocol):
    async def send(self, base_url: str, out: Outbound) -> UpstreamResponse: ...


class Guard(Protocol):
    """Exchange cool-downs (proxy.guards.hooks.ExchangeSafety): the clock sends nothing for
    a paused account, and its answers may start a cool-down like a bot's."""

    async def paused(self, account: str) -> bool: ...

    async def observe(self, account: str, exchange: str, status: int,
                      headers: tuple[tuple[str, str], ...], body: bytes) -> None: ...


@dataclass(frozen=True)
class Target:
    """One account whose exchange has a server-time endpoint."""

    account: str
    base_url: str
    server_time: ServerTime
    exchange: str = ""


@dataclass(frozen=True)
class Sample:
    offset_ms: int
    rtt_ms: float


@dataclass(frozen=True)
class Measurement:
    offset_ms: int
    rtt_ms: float      # the best round trip of the round: the offset is good to about half of it
    at_unix_s: int


def sample_offset(server_ms: int, sent_ns: int, received_ns: int) -> int:
    """``server_ms - (sent + received) / 2`` in whole ms, exact integer arithmetic."""
    return (server_ms * 2_000_000 - sent_ns - received_ns) // 2_000_000


def best_offset(samples: Iterable[Sample], max_rtt_ms: float = MAX_RTT_MS) -> Sample | None:
    """The median offset of the samples whose round trip is at most ``max_rtt_ms`` (a long
    round trip leaves the server's moment anywhere within it), with the best round trip."""
    good = [s for s in samples if s.rtt_ms <= max_rtt_ms]
    if not good:
        return None
    return Sample(median_low(s.offset_ms for s in good), min(s.rtt_ms for s in good))


class ExchangeClock:
    """Offsets per account; ``offset_ms`` is the pipeline's hot-path lookup (a dict read)."""

    def __init__(
        self, sender: Sender, targets: Iterable[Target], metrics: Metrics | None = None, *,
        interval_s: float = INTERVAL_S, samples: int = SAMPLES, max_rtt_ms: float = MAX_RTT_MS,
        wall_ns: Callable[[], int] = time.time_ns, mono_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._sender = sender
        self.targets: dict[str, Target] = {t.account: t for t in targets}
        self._metrics = metrics
        self._interval = interval_s
        self._samples = samples
        self._max_rtt = max_rtt_ms
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        #: per account: exchange time minus monotonic time, in ms
        self._bases: dict[str, int] = {}
        self.measurements: dict[str, Measurement] = {}
        self.errors: dict[str, str] = {}
        self.first_round = asyncio.Event()
        self._tried: set[str] = set()
        #: set by the worker: skip paused accounts, report 429/418 answers
        self.guard: Guard | None = None

    def offset_ms(self, account: str) -> int:
        """Exchange time minus host time for ``account``; 0 (host clock) until measured.

        Kept against the monotonic clock, so a step of the host's wall clock between two
        measurements (NTP, an operator) moves the offset with it instead of going stale."""
        base = self._bases.get(account)
        if base is None:
            return 0
        return base - (self._wall_ns() - self._mono_ns()) // 1_000_000

    def detail(self) -> dict[str, object]:
        """For /readyz: each tracked account's offset, or why it has none yet."""
        out: dict[str, object] = {}
        for name in self.targets:
            m = self.measurements.get(name)
            entry: dict[str, object] = (
                {"offset_ms": m.offset_ms, "rtt_ms": round(m.rtt_ms, 3), "measured_at": m.at_unix_s}
                if m is not None else {"offset_ms": 0, "measured_at": None}
            )
            if name in self.errors:
                entry["error"] = self.errors[name]
            out[name] = entry
        return out

    async def run(self) -> None:
        """Measure every account now, then each on its own schedule, until cancelled."""
        if not self.targets:
            self.first_round.set()
            return
        await asyncio.gather(*(self._follow(t) for t in self.targets.values()))

    async def wait_first_round(self, timeout_s: float = FIRST_ROUND_S) -> None:
        """Return once every account was tried once, or after ``timeout_s`` (never raises)."""
        try:
            await asyncio.wait_for(self.first_round.wait(), timeout_s)
        except TimeoutError:
            log.warning("exchange clocks: first measurement not finished in %.1fs; signing with "
                        "the host clock until it is", timeout_s)

    async def _follow(self, target: Target) -> None:
        while True:
            await self.measure(target)
            self._tried.add(target.account)
            if len(self._tried) >= len(self.targets):
                self.first_round.set()
            base = self._interval if target.account in self.measurements else RETRY_S
            await asyncio.sleep(base * random.uniform(0.9, 1.1))

    async def measure(self, target: Target) -> Measurement | None:
        """One round of samples for ``target``; updates the offset when one is good."""
        samples: list[Sample] = []
        problem = ""
        for _ in range(self._samples):
            if self.guard is not None and await self.guard.paused(target.account):
                break  # the exchange asked for quiet: keep the last offset
            try:
                samples.append(await self._sample(target))
            except (ProxyError, TimeoutError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"[:200]
        best = best_offset(samples, self._max_rtt)
        name = target.account
        if best is None and not samples and not problem:
            return None  # paused before the first sample: nothing was asked
        if best is None:
            self.errors[name] = problem or f"every round trip was over {self._max_rtt:g} ms"
            log.warning("exchange clock for %s not measured: %s", name, self.errors[name])
            if self._metrics is not None:
                self._metrics.inc("proxy_exchange_clock_errors_total", (("account", name),),
                                  help="server-time rounds that gave no usable sample")
            return None
        self.errors.pop(name, None)
        measurement = Measurement(best.offset_ms, best.rtt_ms, self._wall_ns() // 1_000_000_000)
        previous = self.measurements.get(name)
        self._bases[name] = best.offset_ms + (self._wall_ns() - self._mono_ns()) // 1_000_000
        self.measurements[name] = measurement
        if previous is None or abs(previous.offset_ms - best.offset_ms) > 1000:
            log.info("exchange clock for %s: offset %+d ms (round trip %.1f ms)",
                     name, best.offset_ms, best.rtt_ms)
        if self._metrics is not None:
            self._metrics.set("proxy_exchange_clock_offset_ms", (("account", name),), best.offset_ms,
                              help="exchange server time minus host time, as used for signing")
        return measurement

    async def _sample(self, target: Target) -> Sample:
        request = target.server_time.request()
        sent_mono, sent = self._mono_ns(), self._wall_ns()
        response = await asyncio.wait_for(self._sender.send(target.base_url, request), FETCH_TIMEOUT_S)
        received, received_mono = self._wall_ns(), self._mono_ns()
        if self.guard is not None:
            await self.guard.observe(target.account, target.exchange, response.status, response.headers,
                                     response.body)
        if response.status != 200:
            raise ValueError(f"server time answered HTTP {response.status}")
        server_ms = target.server_time.parse(response.body)
        return Sample(sample_offset(server_ms, sent, received), (received_mono - sent_mono) / 1e6)


def targets_for(accounts: Mapping[str, tuple[str, Exchange, bool]]) -> list[Target]:
    """Targets from ``account -> (base_url, exchange, enabled)``: window-based exchanges that
    declare a server-time endpoint, unless the account turned tracking off."""
    found = []
    for name, (base_url, exchange, enabled) in accounts.items():
        server_time = exchange.capabilities.server_time
        if enabled and exchange.nonce_unit is None and server_time is not None:
            found.append(Target(name, base_url, server_time, exchange.name))
    return found
