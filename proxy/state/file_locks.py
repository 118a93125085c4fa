"""Per-key locks of the sqlite store: ``flock`` on one file per key next to the database.

The kernel drops a dead holder's lock at once, so ``kill -9`` never leaves a key blocked; an
``asyncio.Lock`` per key queues this process's own waiters first, so they do not all poll the
file. One host only (flock does not work across NFS hosts).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from proxy.errors import LockTimeout, NotReady
from proxy.state.base import KeyLease


@contextlib.asynccontextmanager
async def key_file_lock(lock_dir: Path, local_locks: dict[str, asyncio.Lock], key_id: str,
                        timeout_s: float) -> AsyncIterator[KeyLease]:
    """Hold ``key_id`` across this host's processes until the block ends (LockTimeout after
    ``timeout_s``; NotReady if the lock file cannot be opened)."""
    deadline = time.monotonic() + timeout_s
    local = local_locks.setdefault(key_id, asyncio.Lock())
    try:
        await asyncio.wait_for(local.acquire(), timeout=max(timeout_s, 0.0))
    except TimeoutError:
        raise LockTimeout(f"key {key_id!r} stayed locked for {timeout_s}s; retry") from None
    try:
        name = hashlib.sha256(key_id.encode()).hexdigest()[:40] + ".lock"
        try:
            fd = os.open(lock_dir / name, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise NotReady(f"state store unreachable: lock file: {exc}") from exc
        try:
            delay = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"key {key_id!r} stayed locked for {timeout_s}s; retry"
                        ) from None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.02)
            try:
                yield KeyLease()
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        local.release()

