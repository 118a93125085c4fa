"""A key pool: several API keys of one account, to go faster where each key is serialised.

On nonce-based exchanges a key's nonces must arrive in order, so the proxy holds a per-key lock
from nonce allocation until the exchange answers: one request in flight per key, and a key's
throughput is about one request per exchange round trip. N keys give N independent nonce
sequences and locks, so up to N requests in flight. Each request takes the key that has the
fewest requests in flight in this process (ties in turn); across workers and hosts the store's
per-key lock still serialises each key, so a collision costs a wait, never an ordering error.

Credentials per key swap atomically on rotation, like ``Account.creds``: a request keeps the
credentials it leased.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from proxy.errors import NotReady
from proxy.exchanges.base import Credentials


class KeyPool:
    """The keys of one account, in configuration order (KV paths), and their use here."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths
        self.creds: list[Credentials | None] = [None] * len(paths)
        self.errors: list[str] = [""] * len(paths)
        self._busy = [0] * len(paths)
        self._turn = 0

    def __repr__(self) -> str:
        loaded = sum(c is not None for c in self.creds)
        return f"KeyPool({len(self.paths)} keys, {loaded} loaded)"

    def set(self, index: int, creds: Credentials | None, error: str = "") -> None:
        if creds is not None:
            self.creds[index] = creds
        self.errors[index] = error

    def forget(self, index: int, reason: str) -> bool:
        """The key's secret is gone in Vault: never lease it again (the others serve).
        True if it was loaded until now."""
        was = self.creds[index] is not None
        self.creds[index], self.errors[index] = None, reason
        return was

    def first_loaded(self) -> Credentials | None:
        """The first key that is loaded: the account's reference key (``Account.creds``)."""
        return next((c for c in self.creds if c is not None), None)

    def missing(self) -> list[str]:
        """Why each key that is not loaded is not (for readiness)."""
        return [f"key {path}: {self.errors[i] or 'secret not loaded'}"
                for i, path in enumerate(self.paths) if self.creds[i] is None]

    def in_flight(self) -> tuple[int, ...]:
        return tuple(self._busy)

    @contextmanager
    def lease(
        self, refusal: Callable[[str, Credentials], NotReady | None] | None = None,
    ) -> Iterator[tuple[int, Credentials]]:
        """The loaded key with the fewest requests in flight here (ties in turn), held until
        the block ends. ``refusal(path, creds)``: why a key may not sign (its permission
        check, proxy/guards/key_vetting.py), or None; such a key is never leased. NotReady if no
        key is loaded, the first key's refusal if none may sign."""
        n = len(self.paths)
        best: int | None = None
        refused: NotReady | None = None
        for step in range(n):
            i = (self._turn + step) % n
            held = self.creds[i]
            if held is None or (best is not None and self._busy[i] >= self._busy[best]):
                continue
            why = refusal(self.paths[i], held) if refusal is not None else None
            if why is not None:
                refused = refused or why
                continue
            best = i
        if best is None:
            raise refused or NotReady("no key of this account's pool is loaded")
        creds = self.creds[best]
        assert creds is not None
        self._turn = (best + 1) % n
        self._busy[best] += 1
        try:
            yield best, creds
        finally:
            self._busy[best] -= 1
