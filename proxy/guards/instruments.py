"""Instruments read from the exchange: how an order's quantity becomes notional (L2).

An exchange module says how to ask for one instrument and how to read the answer (pure:
``instrument_request(symbol, market) -> Outbound`` and ``parse_instrument(symbol, market,
body) -> Instrument``, raising :class:`~proxy.exchanges.base.InstrumentError` on any doubt).
This cache fetches through the account's own base URL, keeps an answer ``ttl_s`` (then reads
it again: contract sizes change on re-denomination), keeps a failure ``failure_ttl_s`` (so a
bot cannot make the proxy call the exchange once per refused order), lets concurrent requests
share one fetch, and charges each fetch to the account's weight budget before it is made. A
failure gives None and every notional rule on that instrument refuses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from proxy.errors import InstrumentError, ProxyError
from proxy.model.request import Instrument, Outbound
from proxy.upstream import UpstreamResponse

log = logging.getLogger("proxy.instruments")

DEFAULT_TTL_S = 600.0
FAILURE_TTL_S = 10.0
FETCH_TIMEOUT_S = 3.0


class Sender(Protocol):
    async def send(self, base_url: str, out: Outbound) -> UpstreamResponse: ...


#: (account, exchange, request) before a fetch: spends the account's weight budget (raises
#: RateLimited when spent, and nothing is fetched)
Charger = Callable[[str, str, Outbound], Awaitable[None]]
#: (exchange, base URL, status, headers, body) of every answer: a 429/418 starts a cool-down
AnswerObserver = Callable[[str, str, int, tuple[tuple[str, str], ...], bytes], Awaitable[None]]

_Key = tuple[str, str, str, str]


def reads_instruments(exchange: Any) -> bool:
    return callable(getattr(exchange, "instrument_request", None)) and callable(
        getattr(exchange, "parse_instrument", None))


class Instruments:
    """Cached instruments per (base URL, exchange, market, symbol)."""

    def __init__(
        self, sender: Sender, *, ttl_s: float = DEFAULT_TTL_S, failure_ttl_s: float = FAILURE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self._ttl = ttl_s
        self._failure_ttl = failure_ttl_s
        self._clock = clock
        self._cache: dict[_Key, tuple[float, Instrument | None]] = {}
        self._inflight: dict[_Key, asyncio.Future[Instrument | None]] = {}
        self.charge: Charger | None = None
        self.on_answer: AnswerObserver | None = None

    async def lookup(
        self, exchange: Any, base_url: str, account: str, wanted: Iterable[tuple[str, str]],
    ) -> dict[str, Instrument]:
        """The instrument of each (symbol, market) that could be read, by symbol."""
        out: dict[str, Instrument] = {}
        for symbol, market in sorted(wanted):
            instrument = await self.get(exchange, base_url, account, symbol, market)
            if instrument is not None:
                out[symbol] = instrument
        return out

    async def get(self, exchange: Any, base_url: str, account: str, symbol: str,
                  market: str) -> Instrument | None:
        if not reads_instruments(exchange):
            return None
        name = str(getattr(exchange, "name", ""))
        key = (base_url, name, market, symbol)
        cached = self._cache.get(key)
        if cached is not None:
            ttl = self._ttl if cached[1] is not None else self._failure_ttl
            if self._clock() - cached[0] < ttl:
                return cached[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Instrument | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            instrument = await self._fetch(exchange, name, base_url, account, symbol, market)
            self._cache[key] = (self._clock(), instrument)
            future.set_result(instrument)
            return instrument
        except BaseException:
            future.set_result(None)
            raise
        finally:
            del self._inflight[key]

    async def _fetch(self, exchange: Any, name: str, base_url: str, account: str, symbol: str,
                     market: str) -> Instrument | None:
        try:
            request: Outbound = exchange.instrument_request(symbol, market)
        except InstrumentError as exc:
            log.warning("instrument %s (%s): %s", symbol, name, exc)
            return None
        if self.charge is not None:
            await self.charge(account, name, request)  # RateLimited propagates: nothing fetched
        try:
            response = await asyncio.wait_for(self._sender.send(base_url, request), FETCH_TIMEOUT_S)
            if self.on_answer is not None:
                await self.on_answer(name, base_url, response.status, response.headers, response.body)
            if response.status != 200:
                log.warning("instrument %s (%s): the exchange answered %d", symbol, name, response.status)
                return None
            instrument: Instrument = exchange.parse_instrument(symbol, market, response.body)
        except (ProxyError, TimeoutError, InstrumentError) as exc:
            log.warning("instrument %s (%s) unavailable: %s %s", symbol, name, type(exc).__name__,
                        exc if isinstance(exc, InstrumentError) else "")
            return None
        if instrument.symbol != symbol:
            log.warning("instrument %s (%s): the answer is for another instrument", symbol, name)
            return None
        return instrument
