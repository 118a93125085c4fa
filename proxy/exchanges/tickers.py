"""Each exchange's public ticker: the request for one symbol and the parse of its answer (pure).

Reference prices for price bands and base-sized market orders come from here; the fetch and
the cache live in :mod:`proxy.guards.prices` (L2). A parse never guesses: any answer that is
not exactly the documented shape for the asked symbol, or whose price is missing, zero,
negative or not finite, raises :class:`TickerError`, and the policy then refuses what needed
the price (fail closed). Where the exchange stamps its quote, the stamp is returned so the
caller can refuse a stale one.

Shapes (ccxt 4.5.90 ``parse_ticker`` and the exchanges' docs): Binance ``/api/v3/ticker/price``
``price``; Bybit ``/v5/market/tickers`` ``result.list[0].lastPrice``; OKX
``/api/v5/market/ticker`` ``data[0].last``; Bitget ``/api/v2/spot/market/tickers``
``data[0].lastPr``; Bitstamp ``/api/v2/ticker/{pair}/`` ``last``; Bitfinex ``/v2/ticker/t{SYM}``
``[BID, BID_SIZE, ASK, ASK_SIZE, DAILY_CHANGE, DAILY_CHANGE_RELATIVE, LAST_PRICE, ...]``; Kraken
``/0/public/Ticker`` ``result.<pair id>.c[0]``; Coinbase
``/api/v3/brokerage/market/products/{id}`` ``price``; Deribit ``/api/v2/public/ticker``
``result.last_price``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, quote

from proxy.errors import TickerError
from proxy.model.request import Outbound, Prepared


@dataclass(frozen=True)
class Quote:
    price: Decimal
    #: the exchange's own time of the quote (ms since the epoch), when the answer carries one
    at_ms: int | None = None


@dataclass(frozen=True)
class _Source:
    symbol: re.Pattern[str]
    path: Callable[[str, str], str]            # (symbol, market) -> path and query
    parse: Callable[[Any, str, str], Quote]    # (JSON answer, symbol, market) -> Quote
    headers: tuple[tuple[str, str], ...] = ()
    markets: frozenset[str] = frozenset({""})


_PLAIN = re.compile(r"[0-9]{1,24}(?:\.[0-9]{1,24})?")
_BYBIT_CATEGORIES = frozenset({"spot", "linear", "inverse", "option"})


def supported(exchange: str) -> bool:
    return exchange in _SOURCES


def ticker_market(exchange: str, prepared: Prepared) -> str:
    """Which of the exchange's markets a symbol's price comes from, when the symbol alone does
    not say: Bybit's ``category`` (BTCUSDT is both a spot pair and a linear perpetual).
    "" for the others. Unknown: "?" (no source serves it, so the price is refused)."""
    if exchange != "bybit":
        return ""
    text = prepared.body.decode("utf-8", "replace") if prepared.body else ""
    try:
        obj = json.loads(text) if text else dict(parse_qsl(prepared.query))
    except ValueError:
        return "?"
    category = obj.get("category") if isinstance(obj, dict) else None
    return category if isinstance(category, str) and category in _BYBIT_CATEGORIES else "?"


def ticker_request(exchange: str, symbol: str, market: str = "") -> Outbound:
    """The public, unsigned ticker request for ``symbol``; TickerError if none can be made."""
    source = _SOURCES.get(exchange)
    if source is None:
        raise TickerError(f"no ticker source for {exchange}")
    if not source.symbol.fullmatch(symbol):
        raise TickerError(f"not a {exchange} symbol")
    if market not in source.markets:
        raise TickerError(f"no {exchange} ticker for market {market!r}")
    return Outbound("GET", source.path(symbol, market), source.headers, b"")


def parse_ticker(exchange: str, symbol: str, body: bytes, market: str = "") -> Quote:
    """The reference price in a ticker answer for ``symbol``; TickerError on any doubt."""
    source = _SOURCES.get(exchange)
    if source is None:
        raise TickerError(f"no ticker source for {exchange}")
    if len(body) > 256 * 1024:
        raise TickerError("ticker answer too large")
    try:
        data = json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError):
        raise TickerError("ticker answer is not JSON") from None
    quote_ = source.parse(data, symbol, market)
    if not quote_.price.is_finite() or quote_.price <= 0:
        raise TickerError("ticker price is not a positive number")
    return quote_


# ---------------------------------------------------------------- helpers


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _price(value: Any, what: str) -> Decimal:
    """A price from a decimal string or a JSON number; never from a bool, null or exponent text."""
    if isinstance(value, str):
        if not _PLAIN.fullmatch(value):
            raise TickerError(f"{what}: not a plain decimal")
        return Decimal(value)
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise TickerError(f"{what}: missing or not a number")
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise TickerError(f"{what}: not a number") from None
    if not price.is_finite():
        raise TickerError(f"{what}: not finite")
    return price


def _ms(value: Any, scale: int = 1) -> int:
    """A quote time in ms from an integer or a digit string (``scale`` 1000 for seconds)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value) * scale
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**16:
        return value * scale
    raise TickerError("quote time: not an integer")


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TickerError(f"{what}: not an object")
    return value


def _one(items: Any, key: str, symbol: str, what: str) -> Mapping[str, Any]:
    """The single entry of ``items`` for ``symbol`` (an answer naming another symbol, or more
    than one entry, is not trusted)."""
    if not isinstance(items, list) or len(items) != 1:
        raise TickerError(f"{what}: expected exactly one ticker")
    item = _obj(items[0], what)
    if item.get(key) != symbol:
        raise TickerError(f"{what}: the answer is for another symbol")
    return item


# ---------------------------------------------------------------- the nine exchanges


def _binance(data: Any, symbol: str, _market: str) -> Quote:
    obj = _obj(data, "binance ticker")
    if obj.get("symbol") != symbol:
        raise TickerError("binance ticker: the answer is for another symbol")
    return Quote(_price(obj.get("price"), "binance price"))


def _bybit(data: Any, symbol: str, market: str) -> Quote:
    obj = _obj(data, "bybit ticker")
    if obj.get("retCode") != 0:
        raise TickerError("bybit ticker: retCode is not 0")
    result = _obj(obj.get("result"), "bybit result")
    if result.get("category") != market:
        raise TickerError("bybit ticker: the answer is for another category")
    item = _one(result.get("list"), "symbol", symbol, "bybit ticker")
    at = _ms(obj["time"]) if "time" in obj else None
    return Quote(_price(item.get("lastPrice"), "bybit lastPrice"), at)


def _okx(data: Any, symbol: str, _market: str) -> Quote:
    obj = _obj(data, "okx ticker")
    if obj.get("code") != "0":
        raise TickerError("okx ticker: code is not \"0\"")
    item = _one(obj.get("data"), "instId", symbol, "okx ticker")
    return Quote(_price(item.get("last"), "okx last"), _ms(item.get("ts")))


def _bitget(data: Any, symbol: str, _market: str) -> Quote:
    obj = _obj(data, "bitget ticker")
    if obj.get("code") != "00000":
        raise TickerError("bitget ticker: code is not \"00000\"")
    item = _one(obj.get("data"), "symbol", symbol, "bitget ticker")
    return Quote(_price(item.get("lastPr"), "bitget lastPr"), _ms(item.get("ts")))


def _bitstamp(data: Any, symbol: str, _market: str) -> Quote:
    obj = _obj(data, "bitstamp ticker")
    pair = obj.get("pair")
    if pair is not None and str(pair).replace("/", "").lower() != symbol:
        raise TickerError("bitstamp ticker: the answer is for another pair")
    at = _ms(obj["timestamp"], 1000) if "timestamp" in obj else None
    return Quote(_price(obj.get("last"), "bitstamp last"), at)


def _bitfinex(data: Any, _symbol: str, _market: str) -> Quote:
    # The singular trading-pair ticker: 10 numbers, LAST_PRICE at index 6. Funding tickers
    # (fUSD) and error answers (["error", code, msg]) have other shapes.
    if not isinstance(data, list) or len(data) != 10:
        raise TickerError("bitfinex ticker: not a trading-pair ticker")
    return Quote(_price(data[6], "bitfinex LAST_PRICE"))


def _kraken(data: Any, _symbol: str, _market: str) -> Quote:
    obj = _obj(data, "kraken ticker")
    if obj.get("error") != []:
        raise TickerError("kraken ticker: error is not empty")
    result = _obj(obj.get("result"), "kraken result")
    # Kraken answers under its own pair id (XBTUSD -> XXBTZUSD): exactly one entry is trusted.
    if len(result) != 1:
        raise TickerError("kraken ticker: expected exactly one pair")
    entry = _obj(next(iter(result.values())), "kraken pair")
    last = entry.get("c")
    if not isinstance(last, list) or not last:
        raise TickerError("kraken ticker: no last trade (c)")
    return Quote(_price(last[0], "kraken c[0]"))


def _coinbase(data: Any, symbol: str, _market: str) -> Quote:
    obj = _obj(data, "coinbase product")
    if obj.get("product_id") != symbol:
        raise TickerError("coinbase product: the answer is for another product")
    return Quote(_price(obj.get("price"), "coinbase price"))


def _deribit(data: Any, symbol: str, _market: str) -> Quote:
    result = _obj(_obj(data, "deribit ticker").get("result"), "deribit result")
    if result.get("instrument_name") != symbol:
        raise TickerError("deribit ticker: the answer is for another instrument")
    if result.get("state", "open") != "open":
        raise TickerError("deribit ticker: the instrument is not open")
    at = _ms(result["timestamp"]) if "timestamp" in result else None
    return Quote(_price(result.get("last_price"), "deribit last_price"), at)


def _q(text: str) -> str:
    return quote(text, safe="")


_SOURCES: dict[str, _Source] = {
    "binance": _Source(re.compile(r"[A-Z0-9_.\-]{1,30}"),
                       lambda s, _: f"/api/v3/ticker/price?symbol={_q(s)}", _binance),
    "bybit": _Source(re.compile(r"[A-Z0-9\-]{1,40}"),
                     lambda s, m: f"/v5/market/tickers?category={m}&symbol={_q(s)}", _bybit,
                     markets=_BYBIT_CATEGORIES),
    "okx": _Source(re.compile(r"[A-Z0-9]{1,20}(?:-[A-Z0-9]{1,20}){1,4}"),
                   lambda s, _: f"/api/v5/market/ticker?instId={_q(s)}", _okx),
    "bitget": _Source(re.compile(r"[A-Z0-9]{2,30}"),
                      lambda s, _: f"/api/v2/spot/market/tickers?symbol={_q(s)}", _bitget),
    "bitstamp": _Source(re.compile(r"[a-z0-9]{4,20}(?:-perp)?"),
                        lambda s, _: f"/api/v2/ticker/{_q(s)}/", _bitstamp),
    "bitfinex": _Source(re.compile(r"t(?:[A-Z0-9]{6}|[A-Z0-9]{2,12}:[A-Z0-9]{2,12})"),
                        lambda s, _: f"/v2/ticker/{_q(s).replace('%3A', ':')}", _bitfinex),
    "kraken": _Source(re.compile(r"[A-Z0-9]{2,24}"),
                      lambda s, _: f"/0/public/Ticker?pair={_q(s)}", _kraken,
                      headers=(("user-agent", "exchange-signing-proxy"),)),
    "coinbase": _Source(re.compile(r"[A-Z0-9]{1,20}(?:-[A-Z0-9]{1,20}){1,3}"),
                        lambda s, _: f"/api/v3/brokerage/market/products/{_q(s)}", _coinbase),
    "deribit": _Source(
        re.compile(r"[A-Z0-9]{1,10}(?:_[A-Z0-9]{1,10})?(?:-[A-Z0-9]{1,12}){0,3}"),
        lambda s, _: f"/api/v2/public/ticker?instrument_name={_q(s)}", _deribit),
}
