"""The bot listener's app before the pipeline is ready: a switch whose target starts as 503."""

from __future__ import annotations

import uuid
from typing import Any

from proxy.errors import NotReady
from proxy.exchanges import for_path
from proxy.pipeline.decision import error_reply
from proxy.pipeline.http import Receive, Scope, Send, split_target


class NotYet:
    """Answers every bot request with 503 not_ready until the pipeline is loaded (or while
    Vault has been unreachable for longer than the grace period)."""

    def __init__(self, message: str = "the proxy is starting; retry shortly") -> None:
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        rid = uuid.uuid4().hex
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        # in the format of the exchange whose path it is, as every refusal before the grant
        reply = error_reply(rid, NotReady(self.message), for_path(split_target(raw_path)[1]))
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": [
            *headers, (b"x-proxy-request-id", rid.encode()),
            (b"content-length", str(len(reply.body)).encode()),
        ]})
        await send({"type": "http.response.body", "body": reply.body})


class Switch:
    """An ASGI app whose target is replaced once the real pipeline is ready."""

    def __init__(self) -> None:
        self.target: Any = NotYet()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.target(scope, receive, send)
