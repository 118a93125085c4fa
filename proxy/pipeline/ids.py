"""Random UUID4s for the hot path: request ids, the randomness of injected client order ids,
and ``Stamp.unique``.

Each is what ``uuid.uuid4()`` makes (16 bytes from ``os.urandom``, version and variant bits
set) without its cost: the bytes are drawn 4 KiB at a time (one system call per 256 ids, not
one per id) and formatted without building a ``UUID`` object. A forked child throws away what
its parent drew (``os.register_at_fork``), so two workers never hand out the same bytes.
"""

from __future__ import annotations

import os

_DRAW = 4096
_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)


class _Pool:
    def __init__(self) -> None:
        self.data = b""
        self.at = 0

    def take(self) -> int:
        at = self.at
        if at + 16 > len(self.data):
            self.data, at = os.urandom(_DRAW), 0
        self.at = at + 16
        return (int.from_bytes(self.data[at:at + 16]) & _VERSION_MASK) | _VERSION_4

    def forget(self) -> None:
        self.data, self.at = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def random_hex() -> str:
    """A fresh random UUID4 as 32 lower-case hex digits (``uuid.uuid4().hex``)."""
    return f"{_pool.take():032x}"


def random_uuid() -> str:
    """A fresh random UUID4 in its 36-character form (``str(uuid.uuid4())``)."""
    h = f"{_pool.take():032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
