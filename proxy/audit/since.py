"""A dead writer's chain from a known position on: what the sqlite store's start-up replay reads
(proxy.state.journal).

No MACs are checked here: replay only ever adds claims whose retry asks the exchange first and
raises nonce floors, so a forged line can cost a lookup or make a key's nonces jump ahead, never
place an order or repeat a nonce; ``audit verify`` is where integrity is judged.
A torn last line (a crash mid-append) is skipped: its batch never became durable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from proxy.audit import layout


def writer_is_dead(directory: Path, writer: str) -> bool:
    """No process holds ``writer``'s lock: it closed (the lock file is gone) or died."""
    try:
        fd = os.open(directory / f"{writer}{layout.LOCK_SUFFIX}", os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the lock again
    return True


def records_since(directory: Path, writer: str, seg: int, offset: int) -> Iterator[dict[str, Any]]:
    """``writer``'s records (not the chain's open and seal lines) from byte ``offset`` of
    segment ``seg`` on, in chain order: only the tail is read."""
    for n in layout.list_chains(directory).get(writer, []):
        if n < seg:
            continue
        path = directory / layout.segment_name(writer, n)
        with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
            f.seek(offset if n == seg else 0)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn tail
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and "_kind" not in rec:
                    yield rec
