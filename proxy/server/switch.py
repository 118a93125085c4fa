"""The bot listener's app before the pipeline is ready: a switch whose target starts as 503."""

from __future__ import annotations

import json
import uuid
from typing import Any

from proxy.pipeline.http import Receive, Scope, Send


class NotYet:
    """Answers every bot request with 503 not_ready until the pipeline is loaded (or while
    Vault has been unreachable for longer than the grace period)."""

    def __init__(self, message: str = "the proxy is starting; retry shortly") -> None:
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        rid = uuid.uuid4().hex
        body = json.dumps({"error": {
            "code": "not_ready", "message": self.message, "request_id": rid,
        }}).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"x-proxy-error", b"not_ready"),
            (b"x-proxy-request-id", rid.encode()), (b"content-length", str(len(body)).encode()),
        ]})
        await send({"type": "http.response.body", "body": body})


class Switch:
    """An ASGI app whose target is replaced once the real pipeline is ready."""

    def __init__(self) -> None:
        self.target: Any = NotYet()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.target(scope, receive, send)
