"""Reference prices for price bands and base-sized market orders, from the exchange's ticker.

A small per-process cache: a price is fetched through the account's own base URL (the same
host orders go to, so tests and testnets see their own prices), kept ``ttl_s`` seconds, and
concurrent requests for the same symbol share one fetch. What to ask and how to read the
answer is per exchange and pure (:mod:`proxy.exchanges.tickers`). Any failure gives None (no
ticker source, an error status, a timeout, an answer of another shape or symbol, a price that
is not positive and finite, a quote the exchange stamped more than ``MAX_QUOTE_AGE_S`` away
from now), and the policy then refuses what needed the price (fail closed): a stale or
guessed price is worse than a refusal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Any, Protocol

from proxy.errors import ProxyError, TickerError
from proxy.exchanges.tickers import parse_ticker, supported, ticker_request
from proxy.model.request import Outbound
from proxy.upstream import UpstreamResponse

log = logging.getLogger("proxy.guards.prices")

DEFAULT_TTL_S = 3.0
FETCH_TIMEOUT_S = 2.0
#: a quote stamped further than this from the proxy's clock is stale (or the clocks disagree)
MAX_QUOTE_AGE_S = 60.0


class Sender(Protocol):
    async def send(self, base_url: str, out: Outbound) -> UpstreamResponse: ...


#: (exchange, base URL, status, headers, body) of every ticker answer: a 429/418 starts a
#: cool-down (proxy.guards.hooks.ExchangeSafety.observe_url)
AnswerObserver = Callable[[str, str, int, tuple[tuple[str, str], ...], bytes], Awaitable[None]]


class ReferencePrices:
    """Cached last prices per (base URL, exchange, market, symbol)."""

    def __init__(
        self, sender: Sender, *, ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._sender = sender
        self._ttl = ttl_s
        self._clock = clock
        self._wall_ms = wall_ms
        self._cache: dict[tuple[str, str, str, str], tuple[float, Decimal]] = {}
        self._inflight: dict[tuple[str, str, str, str], asyncio.Future[Decimal | None]] = {}
        #: set by the pipeline; a fetch happens only for a request whose account is not paused
        self.on_answer: AnswerObserver | None = None

    async def prices(
        self, exchange: Any, base_url: str, symbols: Iterable[str], market: str = "",
    ) -> dict[str, Decimal]:
        """The reference price of each symbol that has one (missing: unknown; refuse).
        ``market`` is :func:`proxy.exchanges.tickers.ticker_market` of the request."""
        out: dict[str, Decimal] = {}
        for symbol in symbols:
            price = await self.get(exchange, base_url, symbol, market)
            if price is not None:
                out[symbol] = price
        return out

    async def get(self, exchange: Any, base_url: str, symbol: str, market: str = "") -> Decimal | None:
        name = str(getattr(exchange, "name", ""))
        if not supported(name):
            return None
        key = (base_url, name, market, symbol)
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
            price = await self._fetch(name, base_url, symbol, market)
            if price is not None:
                self._cache[key] = (self._clock(), price)
            future.set_result(price)
            return price
        except BaseException:
            future.set_result(None)
            raise
        finally:
            del self._inflight[key]

    async def _fetch(self, exchange: str, base_url: str, symbol: str, market: str) -> Decimal | None:
        try:
            request = ticker_request(exchange, symbol, market)
            response = await asyncio.wait_for(self._sender.send(base_url, request), FETCH_TIMEOUT_S)
            if self.on_answer is not None:
                await self.on_answer(exchange, base_url, response.status, response.headers, response.body)
            if response.status != 200:
                log.warning("reference price for %s: ticker answered %d", symbol, response.status)
                return None
            quote = parse_ticker(exchange, symbol, response.body, market)
        except (ProxyError, TimeoutError, TickerError) as exc:
            log.warning("reference price for %s unavailable: %s (%s)", symbol, type(exc).__name__,
                        exc if isinstance(exc, TickerError) else "")
            return None
        if quote.at_ms is not None and abs(self._wall_ms() - quote.at_ms) > MAX_QUOTE_AGE_S * 1000:
            log.warning("reference price for %s refused: the quote is stale", symbol)
            return None
        return quote.price if quote.price.is_finite() and quote.price > 0 else None
