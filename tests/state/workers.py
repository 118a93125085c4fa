"""Subprocess workers for the multi-process tests: ``python -m tests.state.workers CMD ...``.

Each prints one line per event and flushes, so the parent can follow it and kill it with -9.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from proxy.state import IdempotencyScope, Owner, StateStore, open_store


def _open(backend: str, location: str, prefix: str) -> StateStore:
    if backend == "sqlite":
        return open_store("sqlite", path=Path(location), url=None)
    return open_store("redis", path=None, url=location, prefix=prefix)


async def _main(argv: list[str]) -> None:
    cmd, backend, location, prefix, *rest = argv
    store = _open(backend, location, prefix)
    if cmd == "nonces":  # KEY COUNT: allocate and print; COUNT 0 = until killed
        key, count = rest[0], int(rest[1])
        i = 0
        while count == 0 or i < count:
            print(await store.next_nonce(key, "us"), flush=True)
            i += 1
    elif cmd == "hold_lock":  # KEY LEASE_S: take the key lock, say so, hang
        async with store.key_lock(rest[0], 5.0, lease_s=float(rest[1])):
            print("locked", flush=True)
            await asyncio.sleep(3600)
    elif cmd == "hold_begin":  # CLIENT ACCOUNT COID HASH LEASE_S: claim an id, say so, hang
        scope = IdempotencyScope(rest[0], rest[1], rest[2])
        result = await store.begin(scope, rest[3], lease_s=float(rest[4]))
        print("owner" if isinstance(result, Owner) else type(result).__name__, flush=True)
        await asyncio.sleep(3600)
    else:
        raise SystemExit(f"unknown command {cmd}")
    await store.close()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
