"""Reference prices for price bands and base-sized market orders, from the exchange's ticker.

A small per-process cache: a price is fetched through the account's own base URL (the same
host orders go to, so tests and testnets see their own prices), kept ``ttl_s`` seconds, and
concurrent requests for the same symbol share one fetch. Any failure gives None, and the
policy then refuses what needed the price (fail closed): a stale or guessed price is worse
than a refusal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Protocol

from proxy.errors import ProxyError
from proxy.request_model import Outbound
from proxy.upstream import UpstreamResponse

log = logging.getLogger("proxy.reference_prices")

DEFAULT_TTL_S = 3.0
FETCH_TIMEOUT_S = 2.0


class TickerSource(Protocol):
    """What an exchange module offers when it can price a symbol (pure, no I/O)."""

    def ticker_request(self, symbol: str) -> Outbound: ...

    def parse_ticker(self, body: bytes) -> Decimal: ...


class Sender(Protocol):
    async def send(self, base_url: str, out: Outbound) -> UpstreamResponse: ...


class ReferencePrices:
    """Cached last prices per (base URL, exchange, symbol)."""

    def __init__(
        self, sender: Sender, *, ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self._ttl = ttl_s
        self._clock = clock
        self._cache: dict[tuple[str, str, str], tuple[float, Decimal]] = {}
        self._inflight: dict[tuple[str, str, str], asyncio.Future[Decimal | None]] = {}

    async def prices(self, exchange: Any, base_url: str, symbols: Iterable[str]) -> dict[str, Decimal]:
        """The reference price of each symbol that has one (missing: unknown; refuse)."""
        out: dict[str, Decimal] = {}
        for symbol in symbols:
            price = await self.get(exchange, base_url, symbol)
            if price is not None:
                out[symbol] = price
        return out

    async def get(self, exchange: Any, base_url: str, symbol: str) -> Decimal | None:
        if not hasattr(exchange, "ticker_request") or not hasattr(exchange, "parse_ticker"):
            return None
        key = (base_url, str(getattr(exchange, "name", "")), symbol)
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Decimal | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            price = await self._fetch(exchange, base_url, symbol)
            if price is not None:
                self._cache[key] = (self._clock(), price)
            future.set_result(price)
            return price
        except BaseException:
            future.set_result(None)
            raise
        finally:
            del self._inflight[key]

    async def _fetch(self, exchange: TickerSource, base_url: str, symbol: str) -> Decimal | None:
        try:
            request = exchange.ticker_request(symbol)
            response = await asyncio.wait_for(self._sender.send(base_url, request), FETCH_TIMEOUT_S)
            if response.status != 200:
                log.warning("reference price for %s: ticker answered %d", symbol, response.status)
                return None
            price = exchange.parse_ticker(response.body)
        except (ProxyError, TimeoutError, ValueError) as exc:
            log.warning("reference price for %s unavailable: %s", symbol, type(exc).__name__)
            return None
        return price if price > 0 else None
