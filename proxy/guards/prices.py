"""Reference prices for price bands and base-sized market orders, from the exchange's ticker.

A price is fetched through the account's own base URL (the same host orders go to, so tests
and testnets see their own prices) and kept ``ttl_s`` seconds; a failed lookup is kept
``failure_ttl_s`` seconds too, so refused orders cannot make the proxy call the exchange again
and again. With a state store the answer is shared by every worker and host: a lookup is
claimed in the store (one claim per symbol per ``failure_ttl_s``) and its answer published
there, so whatever bots send, the exchange sees at most one ticker call per symbol per cache
period (``ttl_s`` after an answer, ``failure_ttl_s`` after a failure) from the whole proxy.
Each call is charged to the account's weight budget before it is made (``spend``).

What to ask and how to read the answer is per exchange and pure (:mod:`proxy.exchanges.tickers`).
Any failure gives None (no ticker source, an error status, a timeout, an answer of another
shape or symbol, a price that is not positive and finite, a quote the exchange stamped more
than ``MAX_QUOTE_AGE_S`` away from now), and the policy then refuses what needed the price
(fail closed): a stale or guessed price is worse than a refusal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from proxy.errors import ProxyError, TickerError
from proxy.exchanges.tickers import parse_ticker, supported, ticker_request
from proxy.model.request import Outbound
from proxy.state import StateStore
from proxy.upstream import UpstreamResponse

log = logging.getLogger("proxy.guards.prices")

DEFAULT_TTL_S = 3.0
#: how long a failed lookup is remembered (every worker and host, with a state store)
FAILURE_TTL_S = 1.0
FETCH_TIMEOUT_S = 2.0
#: a quote stamped further than this from the proxy's clock is stale (or the clocks disagree)
MAX_QUOTE_AGE_S = 60.0
#: how often a worker that lost the claim looks for the answer another one publishes
_POLL_S = 0.02


class Sender(Protocol):
    async def send(self, base_url: str, out: Outbound) -> UpstreamResponse: ...


#: (exchange, base URL, status, headers, body) of every ticker answer: a 429/418 starts a
#: cool-down (proxy.guards.hooks.ExchangeSafety.observe_url)
AnswerObserver = Callable[[str, str, int, tuple[tuple[str, str], ...], bytes], Awaitable[None]]
#: charges a lookup to the account's weight budget before it is sent; raises RateLimited
Spend = Callable[[Outbound], Awaitable[None]]

_Key = tuple[str, str, str, str]


class ReferencePrices:
    """Cached last prices per (base URL, exchange, market, symbol)."""

    def __init__(
        self, sender: Sender, *, ttl_s: float = DEFAULT_TTL_S, failure_ttl_s: float = FAILURE_TTL_S,
        store: StateStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._sender = sender
        self._ttl = ttl_s
        self._failure_ttl = failure_ttl_s
        self._store = store
        self._clock = clock
        self._wall_ms = wall_ms
        #: key -> (until, on the local clock; the price or None for a failed lookup)
        self._cache: dict[_Key, tuple[float, Decimal | None]] = {}
        self._inflight: dict[_Key, asyncio.Future[Decimal | None]] = {}
        #: set by the pipeline; a fetch happens only for a request whose account is not paused
        self.on_answer: AnswerObserver | None = None

    async def prices(
        self, exchange: Any, base_url: str, symbols: Iterable[str], market: str = "", *,
        spend: Spend | None = None,
    ) -> dict[str, Decimal]:
        """The reference price of each symbol that has one (missing: unknown; refuse).
        ``market`` is :func:`proxy.exchanges.tickers.ticker_market` of the request."""
        out: dict[str, Decimal] = {}
        for symbol in symbols:
            price = await self.get(exchange, base_url, symbol, market, spend=spend)
            if price is not None:
                out[symbol] = price
        return out

    async def get(
        self, exchange: Any, base_url: str, symbol: str, market: str = "", *, spend: Spend | None = None,
    ) -> Decimal | None:
        name = str(getattr(exchange, "name", ""))
        if not supported(name):
            return None
        key = (base_url, name, market, symbol)
        cached = self._cache.get(key)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Decimal | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            price = await self._lookup(key, spend)
            future.set_result(price)
            return price
        except BaseException:
            future.set_result(None)
            raise
        finally:
            del self._inflight[key]

    async def _lookup(self, key: _Key, spend: Spend | None) -> Decimal | None:
        """This worker's one lookup for ``key``: the shared answer, or a claimed fetch."""
        if self._store is None:
            return self._remember(key, await self._fetch_charged(key, spend))
        name = "refprice|" + "|".join(f"{len(k)}:{k}" for k in key)
        shared = await self._shared(name)
        if shared is not None:
            return self._remember(key, *shared)
        claimed = await self._store.add_to_window("claim|" + name, 1, self._failure_ttl, limit=1) <= 1
        if not claimed:  # another worker or host is asking the exchange right now, or just did
            deadline = self._clock() + FETCH_TIMEOUT_S + 0.5
            while self._clock() < deadline:
                await asyncio.sleep(_POLL_S)
                shared = await self._shared(name)
                if shared is not None:
                    return self._remember(key, *shared)
            return self._remember(key, None, self._failure_ttl)
        price: Decimal | None = None
        try:
            price = await self._fetch_charged(key, spend)
        finally:  # published even when the lookup was refused (weight budget): nobody waits for it
            ttl = self._ttl if price is not None else self._failure_ttl
            value = json.dumps({"price": None if price is None else str(price), "at_ms": self._wall_ms()})
            await self._store.set_flag(name, value, ttl)
        return self._remember(key, price, ttl)

    async def _shared(self, name: str) -> tuple[Decimal | None, float] | None:
        """(price or None, seconds left) published by whoever fetched, or None: not there."""
        assert self._store is not None
        raw = await self._store.get_flag(name)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            price = None if doc["price"] is None else Decimal(doc["price"])
            ttl = self._ttl if price is not None else self._failure_ttl
            return price, max(0.0, ttl - (self._wall_ms() - int(doc["at_ms"])) / 1000)
        except (ValueError, KeyError, TypeError, InvalidOperation):
            return None, self._failure_ttl

    def _remember(self, key: _Key, price: Decimal | None, ttl: float | None = None) -> Decimal | None:
        if ttl is None:
            ttl = self._ttl if price is not None else self._failure_ttl
        self._cache[key] = (self._clock() + ttl, price)
        return price

    async def _fetch_charged(self, key: _Key, spend: Spend | None) -> Decimal | None:
        base_url, exchange, market, symbol = key
        try:
            request = ticker_request(exchange, symbol, market)
        except TickerError as exc:
            log.warning("reference price for %s unavailable: %s", symbol, exc)
            return None
        if spend is not None:
            await spend(request)  # over the account's weight budget: RateLimited, nothing sent
        return await self._fetch(exchange, base_url, symbol, market, request)

    async def _fetch(
        self, exchange: str, base_url: str, symbol: str, market: str, request: Outbound,
    ) -> Decimal | None:
        try:
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
