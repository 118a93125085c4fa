"""How an exchange tells the time: its public server-time request and a pure parser of the answer.

Window-based exchanges reject a request whose timestamp is too far from *their* clock, so the
proxy measures the offset of each exchange's clock from the host's (:mod:`proxy.guards.clock`)
and signs with corrected time. Each exchange module declares ``capabilities.server_time``
(a :class:`ServerTime`, or None where it publishes none or signs with a nonce). This module is
pure (no I/O, no clock): the caller sends the request and passes the body here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxy.errors import BadRequest
from proxy.exchanges.base import parse_json
from proxy.model.request import Outbound

TimeUnit = Literal["s", "ms", "ns"]

#: Plausible epoch bounds in ms (2001-09-09 .. 2100-01-01): anything else is not a clock.
MIN_EPOCH_MS = 1_000_000_000_000
MAX_EPOCH_MS = 4_102_444_800_000

_PER_MS = {"s": None, "ms": 1, "ns": 1_000_000}


@dataclass(frozen=True)
class ServerTime:
    """``GET path`` answers JSON whose ``field`` (a path of keys and list indexes) holds the
    epoch time in ``unit`` as an integer or a string of digits."""

    path: str
    field: tuple[str | int, ...]
    unit: TimeUnit = "ms"

    def request(self) -> Outbound:
        """The unsigned public request (nothing secret, no auth headers)."""
        return Outbound("GET", self.path, (), b"")

    def parse(self, body: bytes) -> int:
        """The server's time in epoch milliseconds; ValueError if the answer is not one."""
        try:
            node: object = parse_json(body, "server time")
        except BadRequest as exc:
            raise ValueError(exc.message) from None
        for step in self.field:
            in_list = isinstance(step, int) and isinstance(node, list) and 0 <= step < len(node)
            in_dict = isinstance(step, str) and isinstance(node, dict) and step in node
            if not (in_list or in_dict):
                raise ValueError(f"server time: no {step!r} in the answer")
            node = node[step]  # type: ignore[index]
        return epoch_ms(node, self.unit)


def epoch_ms(value: object, unit: TimeUnit = "ms") -> int:
    """An exact epoch time in ms from an integer or a digit string in ``unit`` (no floats)."""
    if isinstance(value, bool):
        raise ValueError("server time: not a number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        number = int(value)
    else:
        raise ValueError("server time: not an integer")
    per_ms = _PER_MS[unit]
    ms = number * 1000 if per_ms is None else number // per_ms
    if not MIN_EPOCH_MS <= ms <= MAX_EPOCH_MS:
        raise ValueError("server time: out of any plausible range")
    return ms
