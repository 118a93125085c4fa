"""Accounts at run time: configuration, the exchange module configured for it, and the loaded
credentials (swapped atomically on key rotation; in-flight requests keep what they started with),
one key or a key pool."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from urllib.parse import urlsplit

from proxy import exchanges
from proxy.config import AccountConfig
from proxy.exchanges.base import Credentials, Exchange
from proxy.keys.pool import KeyPool


@dataclass(repr=False)
class Account:
    cfg: AccountConfig
    exchange: Exchange
    host: str
    #: the key (for a key pool: its first key, as the account's reference version)
    creds: Credentials | None = None
    error: str = ""
    #: several keys (``secrets = [...]``): the pipeline leases one per request
    pool: KeyPool | None = None

    def __repr__(self) -> str:
        return f"Account({self.cfg.name!r}, exchange={self.cfg.exchange!r}, loaded={self.creds is not None})"

    @property
    def name(self) -> str:
        return self.cfg.name


def build(cfg: AccountConfig) -> Account:
    """The account with its exchange module specialised by the account's options."""
    exchange = exchanges.get(cfg.exchange)
    caps = exchange.capabilities
    overrides: dict[str, object] = {}
    if cfg.recv_window_ms is not None and caps.receive_window:
        overrides["recv_window"] = cfg.recv_window_ms
    if cfg.nonce_unit is not None and exchange.nonce_unit is not None:
        overrides["nonce_unit"] = cfg.nonce_unit
    if cfg.environment == "testnet":  # e.g. a demo-trading header on the live host
        overrides.update(dict.fromkeys(caps.testnet_switches, True))
    if overrides and dataclasses.is_dataclass(exchange):
        exchange = dataclasses.replace(exchange, **overrides)
    pool = KeyPool(cfg.secrets) if cfg.secrets else None
    return Account(cfg=cfg, exchange=exchange, host=urlsplit(cfg.base_url).netloc, pool=pool)
