"""Forwarding to the exchange with aiohttp.

aiohttp rather than httpx: on this machine httpx 0.28 adds ~0.85 ms at p50 and tops out near
1,000 req/s forwarding, aiohttp ~0.23 ms and ~6,000 req/s (docs/design.md; encode/httpx#3215; our
own bench/ table is in the README). The signed bytes go out exactly as signed: the URL is marked
already-encoded so nothing re-quotes it, redirects are never followed, and only the headers the
exchange module built are sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from proxy.errors import UpstreamError, UpstreamTimeout
from proxy.model.request import Outbound

#: Response headers never passed back to the bot (hop-by-hop, or recomputed by the proxy).
DROP_RESPONSE_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "content-length", "content-encoding", "set-cookie", "date",
    "server",
})


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    latency_ms: float


class Upstream:
    """One pooled HTTP client for every account of this process."""

    def __init__(self, timeout_s: float, max_body_bytes: int = 8 * 1024 * 1024) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 5.0))
        self._max_body = max_body_bytes
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=256, limit_per_host=128, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=True,
            skip_auto_headers=("User-Agent",), cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def connect_stream(self, url: str) -> Any:
        """Open an exchange's stream (``async with``): protocol pings are answered for us, and a
        silent exchange is noticed by our own pings every 20 s."""
        assert self._session is not None, "Upstream.start() first"
        return self._session.ws_connect(
            url, heartbeat=20.0, autoping=True, max_msg_size=4 * 1024 * 1024,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        )

    async def send(self, base_url: str, out: Outbound) -> UpstreamResponse:
        """Send ``out`` to ``base_url``; translate transport failures to contract errors."""
        assert self._session is not None, "Upstream.start() first"
        url = URL(base_url + out.path_and_query, encoded=True)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self._session.request(
                out.method, url, headers=dict(out.headers), data=out.body or None,
                allow_redirects=False,
                # an empty POST gets no made-up type (an exchange may refuse a type without a body)
                skip_auto_headers=() if out.body else ("Content-Type",),
            ) as resp:
                body = await self._read_all(resp)
                headers = tuple(
                    (k, v) for k, v in resp.headers.items() if k.lower() not in DROP_RESPONSE_HEADERS
                )
                status = resp.status
        except TimeoutError:
            raise UpstreamTimeout("the exchange did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"the exchange could not be reached ({type(exc).__name__})") from None
        return UpstreamResponse(status, headers, body, (loop.time() - started) * 1000)

    async def _read_all(self, resp: aiohttp.ClientResponse) -> bytes:
        """The whole body, up to the cap. ``content.read(n)`` alone returns whatever is
        buffered (one chunk, one TLS record), not everything up to ``n``."""
        chunks: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(64 * 1024):
            size += len(chunk)
            if size > self._max_body:
                raise UpstreamError("the exchange's answer was larger than the proxy accepts")
            chunks.append(chunk)
        return b"".join(chunks)
