"""``[server.limits]``: what a client may make the proxy hold before it is authenticated.

The values (SECURITY.md "Denial of service"); the configuration checks their ranges, and
proxy/server/listeners.py enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass


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
