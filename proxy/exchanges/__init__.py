"""The exchanges in scope. Each lives in its own module exposing ``EXCHANGE``.

Adding an exchange means one module here plus one emulator; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import importlib
from functools import cache

from proxy.exchanges.base import Environment, Exchange

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


#: The field an exchange module sets when its demo trading shares the live host and is chosen
#: by a header on every request (OKX ``x-simulated-trading: 1``, Bitget ``paptrading: 1``).
DEMO_HEADER_FIELDS = ("simulated_trading", "paper_trading")


def demo_header_field(exchange: Exchange) -> str | None:
    return next((f for f in DEMO_HEADER_FIELDS if hasattr(exchange, f)), None)


def for_environment(exchange: Exchange, environment: Environment) -> Exchange:
    """The module as an account of ``environment`` uses it: on testnet, with its demo header
    where demo trading is chosen by one."""
    field = demo_header_field(exchange)
    if environment != "testnet" or field is None or not dataclasses.is_dataclass(exchange):
        return exchange
    demo: Exchange = dataclasses.replace(exchange, **{field: True})
    return demo


def testnet_problem(exchange: Exchange) -> str | None:
    """Why ``environment = "testnet"`` cannot mean a demo or testnet on this exchange, or None:
    it must have its own host or a demo header, never silently the live exchange."""
    try:
        testnet = exchange.base_url("testnet")
    except (ValueError, KeyError) as exc:
        return str(exc) or f"{exchange.name} has no testnet"
    if testnet == exchange.base_url("live") and demo_header_field(exchange) is None:
        return (f"{exchange.name}'s testnet URL is its live URL and nothing marks a request as demo; "
                "it would trade live")
    return None
