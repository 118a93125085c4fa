"""The ASGI edge of the pipeline: types, the reply value, the target split and bounded body reads."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest, TooLarge

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_ACCOUNT = re.compile(rb"[a-z0-9][a-z0-9_-]{0,62}")


@dataclass(frozen=True)
class Reply:
    """What the bot gets back: status, headers and body, before the proxy's own headers."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def split_target(raw_path: bytes) -> tuple[str | None, str]:
    """``/x/{account}/{exchange path}`` -> (account, exchange path). The exchange path is kept
    raw (percent-encoding intact) for the exchange module's checks."""
    if not raw_path.startswith(b"/x/"):
        return None, ""
    account, sep, rest = raw_path[3:].partition(b"/")
    if not sep or not _ACCOUNT.fullmatch(account):
        return None, ""
    return account.decode(), "/" + rest.decode("latin-1")


async def read_body(receive: Receive, headers: list[tuple[str, str]], limit: int) -> bytes:
    """The whole body, refused as soon as it is known to exceed ``limit`` (declared or sent)."""
    declared = [v for k, v in headers if k == "content-length"]
    if declared:
        if len(declared) > 1 or not declared[0].isdigit():
            raise BadRequest("send exactly one Content-Length, as a plain number")
        if int(declared[0]) > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol; the worker does its own start-up and shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
