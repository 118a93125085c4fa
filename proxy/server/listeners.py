"""The listeners: sockets bound once, and bounded HTTP servers on them (SECURITY.md).

Before a client is authenticated, everything it controls is bounded.

uvicorn's httptools protocol grows the request line and each header value by bytes
concatenation (quadratic in their size) with no limit on either, arms no timer while a request
head or body arrives, and never times out a connection that sends nothing. One client without
a token could therefore stall the worker's event loop for every bot, grow its memory by what it
streams, or hold sockets forever. This subclass adds, per worker and listener:

* the request head (request line and headers) at most ``max_head_bytes``, the request target
  at most ``max_request_line_bytes``, at most ``max_headers`` headers (431 / 414 beyond);
* the head within ``head_timeout_s`` of the connection or of a request's first byte, the body
  within ``body_timeout_s`` of its head (408 beyond; the connection is closed);
* at most ``max_connections`` open connections, ``max_connections_per_source`` from one
  source address (503 beyond, answered at once and closed).

Idle keep-alive is uvicorn's ``timeout_keep_alive``, set from ``keepalive_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.errors import ClientLimitExceeded
from proxy.model.limits import ClientLimits

_REASONS = {
    408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
_CODES = {408: "bad_request", 414: "too_large", 431: "too_large", 503: "not_ready"}


@dataclass
class ConnectionBook:
    """Open connections of one listener in one worker, in total and per source address."""

    on_refuse: Callable[[str], None] = lambda reason: None
    total: int = 0
    by_source: Counter[str] = field(default_factory=Counter)

    def admit(self, source: str, limits: ClientLimits) -> str | None:
        """None when the connection may stay; otherwise which cap it hit."""
        if self.total >= limits.max_connections:
            return "connections"
        if self.by_source[source] >= limits.max_connections_per_source:
            return "connections_per_source"
        self.total += 1
        self.by_source[source] += 1
        return None

    def release(self, source: str) -> None:
        self.total -= 1
        self.by_source[source] -= 1
        if self.by_source[source] <= 0:
            del self.by_source[source]


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the pre-authentication bounds above."""

    def __init__(self, *args: Any, limits: ClientLimits, book: ConnectionBook, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._book = book
        self._source = ""
        self._admitted = False
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: when the head or body now being waited for is overdue (None: nothing is awaited)
        self._deadline: float | None = None
        self._awaiting = "head"

    # ---------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._source = self.client[0] if self.client else ""
        cap = self._book.admit(self._source, self._limits)
        if cap is not None:
            where = " from this address" if cap == "connections_per_source" else ""
            self._answer(503, f"too many connections{where}; retry shortly", cap)
            return
        self._admitted = True
        self._arm(self._limits.head_timeout_s, "head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._admitted:
            self._admitted = False
            self._book.release(self._source)
        super().connection_lost(exc)

    # ---------------------------------------------------------------- receiving

    def data_received(self, data: bytes) -> None:
        """Feed the parser at most what the current head may still take: a head that is not
        complete after ``max_head_bytes`` is refused before more of it is parsed (several
        pipelined requests in one read are fine: each head is counted from its start)."""
        while data and not self.transport.is_closing():
            if not self._in_head:
                super().data_received(data)
                return
            if self._deadline is None:  # the first byte of a next request on a kept-alive connection
                self._arm(self._limits.head_timeout_s, "head")
            room = self._limits.max_head_bytes - self._head_bytes
            if room <= 0:
                self._answer(431, f"the request head is larger than {self._limits.max_head_bytes} bytes",
                             "head_bytes")
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)  # may complete this head (which resets the count)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._header_count = True, 0

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self._limits.max_request_line_bytes:
            self._refusal = (414, f"the request target is longer than "
                                  f"{self._limits.max_request_line_bytes} bytes", "request_line")
            raise ClientLimitExceeded
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            self._refusal = (431, f"more than {self._limits.max_headers} headers", "headers")
            raise ClientLimitExceeded
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._arm(self._limits.body_timeout_s, "body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True  # the next (pipelined or kept-alive) request's head is bounded again
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; ours when one of our limits raised it."""
        if self._refusal is not None:
            self._answer(*self._refusal)
            return
        super().send_400_response(msg)

    # ---------------------------------------------------------------- timers and answers

    def _arm(self, delay: float, what: str) -> None:
        """Await the head or the body for ``delay`` seconds. One timer serves a connection's
        successive deadlines: a deadline later than the timer's is looked at when the timer
        fires, so a request costs no timer of its own (most finish long before)."""
        self._deadline, self._awaiting = self.loop.time() + delay, what
        if self._timer is not None and self._timer.when() > self._deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._check)

    def _disarm(self) -> None:
        self._deadline = None

    def _check(self) -> None:
        self._timer = None
        if self._deadline is None:
            return  # nothing awaited now (an idle kept-alive connection is uvicorn's to close)
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._check)
            return
        self._expired(self._awaiting)

    def _expired(self, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if what == "body" and cycle is not None and (cycle.response_started or cycle.response_complete):
            self._book.on_refuse("body_timeout")
            self.transport.close()  # answered already (e.g. 401 before the body): stop waiting
            return
        if cycle is not None and what == "body":
            cycle.disconnected = True  # the request's task reads http.disconnect and gives up
            cycle.message_event.set()
        limit = self._limits.head_timeout_s if what == "head" else self._limits.body_timeout_s
        self._answer(408, f"the request {what} did not arrive within {limit:g} s", f"{what}_timeout")

    def _answer(self, status: int, message: str, reason: str) -> None:
        """Written directly (no request task exists, or it is abandoned); then close."""
        self._book.on_refuse(reason)
        self._disarm()
        code = _CODES[status]
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        head = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nx-proxy-error: %s\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n"
                % (status, _REASONS[status], code.encode(), len(body)))
        self.transport.write(head + body)
        self.transport.close()


def protocol_factory(limits: ClientLimits, book: ConnectionBook) -> Any:
    """What uvicorn's ``Config(http=...)`` takes: a callable that builds one protocol."""
    return functools.partial(BoundedHttpProtocol, limits=limits, book=book)


class _QuietServer(uvicorn.Server):
    """Signals are handled once for both listeners by the worker, not by each server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listener(app: Any, limits: ClientLimits, graceful_s: int,
             on_refuse: Callable[[str], None]) -> uvicorn.Server:
    """One bounded uvicorn server (its own connection book) for ``app``; a graceful stop
    waits ``graceful_s`` at most for requests in flight."""
    return _QuietServer(uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", loop="none",
        http=protocol_factory(limits, ConnectionBook(on_refuse=on_refuse)), server_header=False,
        date_header=False, timeout_keep_alive=limits.keepalive_timeout_s,
        # the source address (connection caps, refusals without a token) is the peer's, never
        # a header's; and a request skips the middleware that would read X-Forwarded-For
        proxy_headers=False,
        timeout_graceful_shutdown=graceful_s,
        # bots' private streams: a bot's frames are small subscriptions (64 KiB bounds them)
        ws="websockets", ws_max_size=64 * 1024,
    ))


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
