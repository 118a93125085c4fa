"""Run an ASGI app on a free loopback port in a background thread (tests, demo, bench)."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

#: below Linux's ephemeral range (32768-60999), so no outgoing connection can take a port
#: between the moment it is picked and the moment a server binds it
_PORTS = range(20000, 32768)


def free_port() -> int:
    """A loopback port free right now, picked at random outside the ephemeral range (several
    test processes run at once; the kernel's own pick for port 0 is in the range outgoing
    connections draw from, and one of them can take it before the server binds)."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.choice(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port found")


class BackgroundServer:
    """``with BackgroundServer(app) as srv: srv.url`` serves ``app`` until the block ends."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
            loop="asyncio", http="httptools", lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"emulator:{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"emulator on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
