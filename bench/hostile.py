"""Hostile connections for ``bench_proxy.py --hostile N`` (SECURITY.md "Denial of service"):
N connections without a token, from 127.0.0.2 and up, each streaming an endless header and
reconnecting 0.1 s after the proxy refuses it, while the proxy is measured. Compare the proxy's
p99 with a run without: the pre-authentication bounds keep the bot's orders flowing."""

from __future__ import annotations

import multiprocessing as mp
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _flood(port: int, n: int, stop: Any) -> None:
    def one(i: int) -> None:
        while not stop.is_set():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((f"127.0.0.{2 + i % 200}", 0))
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"POST /x/binance-main/api/v3/order HTTP/1.1\r\nX-Flood: ")
                while not stop.is_set():
                    sock.sendall(b"a" * 65536)
            except OSError:
                pass
            finally:
                sock.close()
            stop.wait(0.1)  # each connection comes back 10 times a second at most

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    stop.wait()


@contextmanager
def hostile(port: int, n: int) -> Iterator[None]:
    """``n`` hostile connections to ``port`` for the duration of the block (none when 0)."""
    if n <= 0:
        yield
        return
    stop = mp.Event()
    proc = mp.Process(target=_flood, args=(port, n, stop), daemon=True)
    proc.start()
    try:
        yield
    finally:
        stop.set()
        proc.join(timeout=10)
