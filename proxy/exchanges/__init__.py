"""The exchanges in scope. Each lives in its own module exposing ``EXCHANGE``.

Adding an exchange means one module here plus one emulator; nothing else changes.
"""

from __future__ import annotations

import importlib
from functools import cache

from proxy.exchanges.base import Catalogue, Exchange

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


def for_path(path: str) -> Exchange | None:
    """The exchange whose API ``path`` belongs to, for a refusal made before the account is
    known (docs/interface.md "Refusals"): the longest matching ``refusal_paths`` prefix; when
    several exchanges share it, the one whose catalogue lists the path. None when no exchange,
    or more than one, claims it."""
    best: list[Exchange] = []
    length = 0
    for name in NAMES:
        exchange = get(name)
        for prefix in exchange.refusal_paths:
            if path.startswith(prefix) and len(prefix) >= length:
                best = [exchange] if len(prefix) > length else [*best, exchange]
                length = len(prefix)
    if len(best) > 1:
        best = [e for e in best if _catalogue(e.name).knows(path)]
    return best[0] if len(best) == 1 else None


def answer_reason(name: str, status: int, body: bytes) -> str:
    """``HTTP 400: -1022 Signature for this request is not valid.``: the status and the
    exchange's own code and message, for logs and /readyz (never a secret: exchanges echo
    neither keys nor signatures)."""
    reason = get(name).answer_reason(body) if name in NAMES else None
    return f"HTTP {status}: {reason}" if reason else f"HTTP {status}"


def _catalogue(name: str) -> Catalogue:
    catalogue: Catalogue = importlib.import_module(f"proxy.exchanges.{name}").CATALOGUE
    return catalogue
