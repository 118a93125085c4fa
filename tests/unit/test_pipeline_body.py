"""Reading the bot's body: one plain Content-Length, a hard size limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.errors import BadRequest, TooLarge
from proxy.pipeline.http import read_body as _read_body


def _read(headers: list[tuple[str, str]], chunks: list[bytes], limit: int = 10) -> bytes:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return asyncio.run(_read_body(receive, headers, limit))


def test_pipeline_body_reads_chunks() -> None:
    assert _read([("content-length", "6")], [b"abc", b"def"]) == b"abcdef"


@pytest.mark.parametrize(
    "headers", [[("content-length", "-1")], [("content-length", "1e3")], [("content-length", "3"), ("content-length", "3")]]
)
def test_pipeline_body_refuses_odd_content_length(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequest):
        _read(headers, [b"abc"])


def test_pipeline_body_over_limit_is_too_large_declared_or_streamed() -> None:
    with pytest.raises(TooLarge):
        _read([("content-length", "11")], [b"x" * 11])
    with pytest.raises(TooLarge):
        _read([], [b"x" * 6, b"x" * 6])
