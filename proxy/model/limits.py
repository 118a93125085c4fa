"""``[server.limits]``: what a client may make the proxy hold before it is authenticated.

The values and their checked parsing (SECURITY.md "Denial of service"); the protocol that
enforces them is proxy/server/limits.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from proxy.errors import ConfigError


@dataclass(frozen=True)
class ClientLimits:
    max_head_bytes: int = 16 * 1024            # request line and headers; then 431
    max_request_line_bytes: int = 8 * 1024     # then 414
    max_headers: int = 64                      # then 431
    head_timeout_s: float = 10.0               # from connecting, or a request's first byte; then 408
    body_timeout_s: float = 10.0               # from the end of the head; then 408
    keepalive_timeout_s: int = 30              # an idle kept-alive connection is closed
    max_connections: int = 1024                # per worker and listener; then 503
    max_connections_per_source: int = 256      # per worker, listener and source address; then 503


#: key -> (lowest, highest)
_RANGES: dict[str, tuple[float, float]] = {
    "max_head_bytes": (1024, 1024 * 1024), "max_request_line_bytes": (256, 64 * 1024),
    "max_headers": (8, 1000), "head_timeout_s": (0.1, 300), "body_timeout_s": (0.1, 300),
    "keepalive_timeout_s": (1, 3600), "max_connections": (1, 1_000_000),
    "max_connections_per_source": (1, 1_000_000),
}


def parse_limits(file: object, table: object) -> ClientLimits:
    """The ``[server.limits]`` table of configuration ``file``; ConfigError naming the key."""
    if not isinstance(table, Mapping):
        raise ConfigError(str(file), "server.limits: must be a table")
    kinds = {f.name: float if f.type in ("float", float) else int for f in fields(ClientLimits)}
    values: dict[str, int | float] = {}
    for key, raw in table.items():
        where = f"server.limits.{key}"
        if key not in kinds:
            raise ConfigError(str(file), f"{where}: unknown key; check the spelling against the README")
        kind = kinds[key]
        value = float(raw) if kind is float and isinstance(raw, int) and not isinstance(raw, bool) else raw
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(str(file), f"{where}: must be a {kind.__name__}")
        low, high = _RANGES[key]
        if not low <= value <= high:
            raise ConfigError(str(file), f"{where}: must be between {low:g} and {high:g}")
        values[key] = value
    return ClientLimits(**values)  # type: ignore[arg-type]
