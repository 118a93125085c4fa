"""The exchanges in scope. Each lives in its own module exposing ``EXCHANGE``.

Adding an exchange means one module here plus one emulator; nothing else changes.
"""

from __future__ import annotations

import importlib
from functools import cache

from proxy.exchanges.base import Exchange
from proxy.exchanges.streams import PrivateStream

NAMES = (
    "binance", "bybit", "okx", "bitget", "bitstamp", "bitfinex", "kraken", "coinbase", "deribit",
)


def available() -> tuple[str, ...]:
    """The names whose module is present (all nine once every module has landed)."""
    found = []
    for name in NAMES:
        try:
            importlib.import_module(f"proxy.exchanges.{name}")
        except ModuleNotFoundError:
            continue
        found.append(name)
    return tuple(found)


@cache
def get(name: str) -> Exchange:
    """The exchange object for ``name``; ValueError for a name not in scope."""
    if name not in NAMES:
        raise ValueError(f"unknown exchange {name!r}; use one of {', '.join(NAMES)}")
    try:
        module = importlib.import_module(f"proxy.exchanges.{name}")
    except ModuleNotFoundError:
        raise ValueError(f"exchange {name!r} is not implemented in this build") from None
    exchange: Exchange = module.EXCHANGE
    return exchange


@cache
def stream(name: str) -> PrivateStream | None:
    """The exchange's private stream as the proxy carries it, or None where it carries none yet."""
    try:
        module = importlib.import_module(f"proxy.exchanges.{name}_stream")
    except ModuleNotFoundError:
        return None
    found: PrivateStream = module.STREAM
    return found
