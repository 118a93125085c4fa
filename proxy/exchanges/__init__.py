"""The exchanges in scope. Each is a package here exposing ``EXCHANGE``, which satisfies
:class:`~proxy.exchanges.base.Exchange` and declares every
:class:`~proxy.exchanges.capabilities.Capabilities` (or says it has none).

Adding an exchange means one package here (plus its loader below) and one emulator; nothing
else changes: generic code asks the exchange object, never a table keyed by its name. The
loaders are typed imports, so mypy proves each ``EXCHANGE`` satisfies the protocol, and an
exchange package is imported only when an account (or a test) asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache

from proxy.exchanges.base import Exchange


def _binance() -> Exchange:
    from proxy.exchanges.binance import EXCHANGE
    return EXCHANGE


def _bybit() -> Exchange:
    from proxy.exchanges.bybit import EXCHANGE
    return EXCHANGE


def _okx() -> Exchange:
    from proxy.exchanges.okx import EXCHANGE
    return EXCHANGE


def _bitget() -> Exchange:
    from proxy.exchanges.bitget import EXCHANGE
    return EXCHANGE


def _bitstamp() -> Exchange:
    from proxy.exchanges.bitstamp import EXCHANGE
    return EXCHANGE


def _bitfinex() -> Exchange:
    from proxy.exchanges.bitfinex import EXCHANGE
    return EXCHANGE


def _kraken() -> Exchange:
    from proxy.exchanges.kraken import EXCHANGE
    return EXCHANGE


def _coinbase() -> Exchange:
    from proxy.exchanges.coinbase import EXCHANGE
    return EXCHANGE


def _deribit() -> Exchange:
    from proxy.exchanges.deribit import EXCHANGE
    return EXCHANGE


_LOADERS: Mapping[str, Callable[[], Exchange]] = {
    "binance": _binance, "bybit": _bybit, "okx": _okx, "bitget": _bitget, "bitstamp": _bitstamp,
    "bitfinex": _bitfinex, "kraken": _kraken, "coinbase": _coinbase, "deribit": _deribit,
}

NAMES: tuple[str, ...] = tuple(_LOADERS)


def available() -> tuple[str, ...]:
    """The names of every exchange in this build."""
    return NAMES


@cache
def get(name: str) -> Exchange:
    """The exchange object for ``name``; ValueError for a name not in scope."""
    loader = _LOADERS.get(name)
    if loader is None:
        raise ValueError(f"unknown exchange {name!r}; use one of {', '.join(NAMES)}")
    return loader()


def find(name: str) -> Exchange | None:
    """The exchange object for ``name``, or None when no exchange in scope has that name."""
    return get(name) if name in _LOADERS else None


def for_path(path: str) -> Exchange | None:
    """The exchange whose API ``path`` belongs to (the longest of their ``errors.paths``
    prefixes), for a refusal made before the account is known (docs/interface.md "Refusals").
    None when no exchange, or more than one, claims it."""
    best: list[Exchange] = []
    length = 0
    for name in NAMES:
        exchange = get(name)
        for prefix in exchange.capabilities.errors.paths:
            if path.startswith(prefix) and len(prefix) >= length:
                best = [exchange] if len(prefix) > length else [*best, exchange]
                length = len(prefix)
    return best[0] if len(best) == 1 else None


def answer_reason(name: str, status: int, body: bytes) -> str:
    """``HTTP 400: <the exchange's own code and message>``, for logs and /readyz (never a
    secret: exchanges echo neither keys nor signatures)."""
    reason = get(name).capabilities.errors.reason(body) if name in NAMES else None
    return f"HTTP {status}: {reason}" if reason else f"HTTP {status}"


def testnet_problem(exchange: Exchange) -> str | None:
    """Why ``environment = "testnet"`` cannot mean a demo or test environment on this exchange,
    or None: it needs its own host or a demo switch (``capabilities.testnet_switches``), never
    silently the live exchange."""
    try:
        testnet = exchange.base_url("testnet")
    except (ValueError, KeyError) as exc:
        return str(exc) or f"{exchange.name} has no testnet"
    if testnet == exchange.base_url("live") and not exchange.capabilities.testnet_switches:
        return (f"{exchange.name}'s testnet URL is its live URL and nothing marks a request as demo; "
                "it would trade live")
    return None
