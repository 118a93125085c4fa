"""Run an ASGI app on a free loopback port in a background thread (tests, demo, bench)."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

#: below Linux's ephemeral range (32768-60999), so no outgoing connection can take a port
#: between the moment it is picked and the moment a server binds it
_PORTS = range(20000, 32768)
#: ports picked in the last few minutes, by any process on this host (marker files)
_PICKED = Path(tempfile.gettempdir()) / "proxy-picked-ports"
_HOLD_S = 300.0


def free_port() -> int:
    """A loopback port free right now and not handed out by this function to any process on
    this host in the last few minutes. Tests run in several processes, and a port is often
    bound only seconds after it is picked (written into a config, then a server starts): a
    marker file per port keeps another process from picking it meanwhile. Random picks stay
    outside the ephemeral range, where outgoing connections could take them."""
    _PICKED.mkdir(exist_ok=True)
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.choice(_PORTS)
        marker = _PICKED / str(port)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            try:
                if time.time() - marker.stat().st_mtime < _HOLD_S:
                    continue
                marker.unlink()  # an old pick: free to take again (once: O_EXCL decides)
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except OSError:
                continue
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
