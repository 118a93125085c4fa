"""The floor: a bare aiohttp + uvloop signing forwarder for Binance order placement.

    python bench/floor.py --port P --upstream http://127.0.0.1:E --api-key K   (secret on stdin)

No authentication, policy, state or audit: it stamps ``timestamp``, signs with HMAC-SHA256 and
forwards, which is the least any signing proxy must do. bench_proxy.py runs it beside the proxy
against the same upstream so the proxy's cost is read as a difference to this, not to a
figure from another day.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import sys
import time

import aiohttp
import uvloop
from aiohttp import web


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--api-key", required=True)
    args = ap.parse_args()
    secret = sys.stdin.readline().strip().encode()
    upstream = args.upstream.rstrip("/")
    headers = {"X-MBX-APIKEY": args.api_key, "Content-Type": "application/x-www-form-urlencoded"}

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        payload = f"timestamp={int(time.time() * 1000)}&".encode() + body
        signature = hmac.new(secret, payload, hashlib.sha256).hexdigest().encode()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.post(upstream + request.path, data=payload + b"&signature=" + signature,
                                headers=headers) as answer:
            data = await answer.read()
            return web.Response(body=data, status=answer.status, content_type="application/json")

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", forward)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
