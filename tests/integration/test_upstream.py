"""The upstream client against a real HTTP server on loopback: whole answers, in any chunking,
and a cap on their size."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.errors import UpstreamError
from proxy.model.request import Outbound
from proxy.upstream import Upstream
from proxy_devkit.emulator.server import BackgroundServer

CHUNK = b"x" * 9_973  # prime-sized chunks: no buffer boundary lines up with them


async def _chunked(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers ``/N`` with N chunks, flushed one by one (chunked transfer encoding)."""
    if scope["type"] != "http":
        return
    count = int(scope["path"].strip("/"))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    for _ in range(count):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def server() -> Any:
    srv = BackgroundServer(_chunked).start()
    yield srv
    srv.stop()


def _get(server: BackgroundServer, chunks: int, max_body: int = 8 * 1024 * 1024) -> bytes:
    async def go() -> bytes:
        upstream = Upstream(10.0, max_body_bytes=max_body)
        await upstream.start()
        try:
            return (await upstream.send(server.url, Outbound("GET", f"/{chunks}", (), b""))).body
        finally:
            await upstream.close()
    return asyncio.run(go())


@pytest.mark.parametrize("chunks", [1, 2, 41])
def test_a_chunked_answer_arrives_whole(server: BackgroundServer, chunks: int) -> None:
    assert _get(server, chunks) == CHUNK * chunks


def test_an_answer_over_the_cap_is_an_upstream_error(server: BackgroundServer) -> None:
    with pytest.raises(UpstreamError, match="larger than the proxy accepts"):
        _get(server, 41, max_body=100_000)
