"""Reference prices from an exchange's public ticker: the request for one symbol and the strict
reading of its answer (pure).

Each exchange module declares its :class:`Ticker` (``capabilities.ticker``): the symbol shape,
the path, the parse of the documented answer and, where the symbol alone does not say which
market it is, how a request names its market. The fetch and the cache live in
:mod:`proxy.guards.prices`. A parse never guesses: any answer that is not exactly the
documented shape for the asked symbol, or whose price is missing, zero, negative or not finite,
raises :class:`TickerError`, and the policy then refuses what needed the price (fail closed).
Where the exchange stamps its quote, the stamp is returned so the caller can refuse a stale one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from proxy.errors import TickerError
from proxy.model.request import Outbound, Prepared

MAX_ANSWER_BYTES = 256 * 1024


@dataclass(frozen=True)
class Quote:
    price: Decimal
    #: the exchange's own time of the quote (ms since the epoch), when the answer carries one
    at_ms: int | None = None


def _one_market(_prepared: Prepared) -> str:
    return ""


@dataclass(frozen=True)
class Ticker:
    """One exchange's public ticker.

    ``path(symbol, market)`` is the path and query; ``parse(answer, symbol, market)`` reads the
    JSON answer; ``market(prepared)`` says which of ``markets`` a request's symbols are priced
    in ("?" when it cannot tell: no ticker serves that, so the price is refused)."""

    symbol: re.Pattern[str]
    path: Callable[[str, str], str]
    parse: Callable[[Any, str, str], Quote]
    headers: tuple[tuple[str, str], ...] = ()
    markets: frozenset[str] = frozenset({""})
    market: Callable[[Prepared], str] = _one_market

    def request(self, symbol: str, market: str = "") -> Outbound:
        """The public, unsigned ticker request for ``symbol``; TickerError if none can be made."""
        if not self.symbol.fullmatch(symbol):
            raise TickerError("not a symbol of this exchange")
        if market not in self.markets:
            raise TickerError(f"no ticker for market {market!r}")
        return Outbound("GET", self.path(symbol, market), self.headers, b"")

    def quote(self, symbol: str, body: bytes, market: str = "") -> Quote:
        """The reference price in a ticker answer for ``symbol``; TickerError on any doubt."""
        if len(body) > MAX_ANSWER_BYTES:
            raise TickerError("ticker answer too large")
        try:
            data = json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError):
            raise TickerError("ticker answer is not JSON") from None
        quote_ = self.parse(data, symbol, market)
        if not quote_.price.is_finite() or quote_.price <= 0:
            raise TickerError("ticker price is not a positive number")
        return quote_


# ---------------------------------------------------------------- by exchange name


def _ticker(exchange: str) -> Ticker:
    from proxy import exchanges  # the registry imports the exchange modules, which import this

    known = exchanges.find(exchange)
    ticker = known.capabilities.ticker if known is not None else None
    if ticker is None:
        raise TickerError(f"no ticker source for {exchange}")
    return ticker


def supported(exchange: str) -> bool:
    try:
        _ticker(exchange)
    except TickerError:
        return False
    return True


def ticker_market(exchange: str, prepared: Prepared) -> str:
    """Which of the exchange's markets a request's symbols are priced in ("" where the symbol
    alone says; "?" when unknown, so no source serves it and the price is refused)."""
    try:
        return _ticker(exchange).market(prepared)
    except TickerError:
        return ""


def ticker_request(exchange: str, symbol: str, market: str = "") -> Outbound:
    """The public, unsigned ticker request for ``symbol``; TickerError if none can be made."""
    try:
        return _ticker(exchange).request(symbol, market)
    except TickerError as exc:
        raise TickerError(f"{exchange}: {exc}") from None


def parse_ticker(exchange: str, symbol: str, body: bytes, market: str = "") -> Quote:
    """The reference price in a ticker answer for ``symbol``; TickerError on any doubt."""
    return _ticker(exchange).quote(symbol, body, market)


# ---------------------------------------------------------------- for the exchange modules


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


_PLAIN = re.compile(r"[0-9]{1,24}(?:\.[0-9]{1,24})?")


def price(value: Any, what: str) -> Decimal:
    """A price from a decimal string or a JSON number; never from a bool, null or exponent text."""
    if isinstance(value, str):
        if not _PLAIN.fullmatch(value):
            raise TickerError(f"{what}: not a plain decimal")
        return Decimal(value)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise TickerError(f"{what}: missing or not a number")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise TickerError(f"{what}: not a number") from None
    if not number.is_finite():
        raise TickerError(f"{what}: not finite")
    return number


def epoch_ms(value: Any, scale: int = 1) -> int:
    """A quote time in ms from an integer or a digit string (``scale`` 1000 for seconds)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value) * scale
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**16:
        return value * scale
    raise TickerError("quote time: not an integer")


def obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TickerError(f"{what}: not an object")
    return value


def only(items: Any, key: str, symbol: str, what: str) -> Mapping[str, Any]:
    """The single entry of ``items`` for ``symbol`` (an answer naming another symbol, or more
    than one entry, is not trusted)."""
    if not isinstance(items, list) or len(items) != 1:
        raise TickerError(f"{what}: expected exactly one ticker")
    item = obj(items[0], what)
    if item.get(key) != symbol:
        raise TickerError(f"{what}: the answer is for another symbol")
    return item


def q(text: str) -> str:
    """``text`` percent-encoded for a path segment or query value."""
    return quote(text, safe="")
