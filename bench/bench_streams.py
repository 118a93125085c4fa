"""Private-stream relay: a bot's WebSocket through the proxy vs. straight to the exchange.

    python bench/bench_streams.py [--pings 5000] [--messages 100000] [--bots 1]

Starts OpenBao and ``python -m proxy serve`` (one worker, its own process) for one Bybit
account whose exchange is a bench server in its own process: the Bybit emulator's REST, and a
``/v5/private`` that accepts any login, answers ``ping`` at once and, on a subscription to
``wallet``, writes ``--messages`` order updates (about 330 bytes each) as fast as it can.

* latency: sequential ``ping``/``pong`` round trips, directly and through the proxy. A round
  trip through the proxy is two relayed messages (bot to exchange, exchange to bot), so the
  added time per relayed message is half the added round trip; both are printed.
* throughput: exchange-to-bot messages per second one worker relays (``--bots`` streams at once)
  against the rate the bench server delivers directly.

Everything shares this machine's cores (load generator, bench server, proxy, OpenBao), so the
figures are comparative, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from proxy_devkit.emulator.server import free_port  # noqa: E402
from tests.support.stack import AccountSpec, start_stack  # noqa: E402

KEY, SECRET = "bench_stream_key", "bench-stream-secret"
POLICY = 'version = 1\nclient = "bench"\n\n[[grants]]\naccount = "bybit-bench"\nallow = ["read"]\n'
ORDER = {"id": "5923240c6880ab-c59f-420b-9adb-3639adc9dd90", "topic": "order", "creationTime": 1672364262474,
         "data": [{"symbol": "BTCUSDT", "orderId": "5cf98598-39a7-459e-97bf-76ca765ee020", "side": "Buy",
                   "orderType": "Limit", "price": "30000", "qty": "0.01", "orderStatus": "New",
                   "orderLinkId": "bench-order-0001", "cumExecQty": "0", "createdTime": "1672364262444",
                   "updatedTime": "1672364262457", "category": "spot", "timeInForce": "GTC"}]}


def _exchange(port: int, messages: int) -> None:
    """The bench server: Bybit's REST emulator plus a fast ``/v5/private``."""
    import uvicorn
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from proxy_devkit.emulator import bybit

    async def private(ws: WebSocket) -> None:
        await ws.accept()
        text = json.dumps(ORDER)
        try:
            while True:
                message = json.loads(await ws.receive_text())
                op = message.get("op")
                if op == "ping":
                    await ws.send_text(json.dumps({"success": True, "ret_msg": "pong", "op": "ping",
                                                   "req_id": message.get("req_id")}))
                elif op == "auth":
                    await ws.send_text('{"success": true, "ret_msg": "", "op": "auth", "conn_id": "b"}')
                elif op == "subscribe":
                    await ws.send_text('{"success": true, "ret_msg": "", "op": "subscribe", "conn_id": "b"}')
                    for _ in range(messages):
                        await ws.send_text(text)
        except WebSocketDisconnect:
            pass

    _, app = bybit.create({KEY: {"api_key": KEY, "api_secret": SECRET}})
    app.router.routes.insert(0, WebSocketRoute("/v5/private", private))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


async def _pings(url: str, headers: dict[str, str], count: int) -> list[float]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(url, headers=headers) as ws:
        await ws.send_str('{"op": "auth", "args": ["placeholder", "1", "00"]}')
        await ws.receive()
        out = []
        for i in range(count + 200):
            t0 = time.perf_counter()
            await ws.send_str(f'{{"op": "ping", "req_id": "{i}"}}')
            await ws.receive()
            if i >= 200:  # warm-up left out
                out.append((time.perf_counter() - t0) * 1000)
        return out


async def _flood(url: str, headers: dict[str, str], messages: int, bots: int) -> float:
    import aiohttp

    async def one(session: Any) -> None:
        async with session.ws_connect(url, headers=headers, max_msg_size=0) as ws:
            await ws.send_str('{"op": "auth", "args": ["placeholder", "1", "00"]}')
            await ws.receive()
            await ws.send_str('{"op": "subscribe", "args": ["wallet"]}')
            await ws.receive()
            for _ in range(messages):
                await ws.receive()

    async with aiohttp.ClientSession() as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(session) for _ in range(bots)))
        return messages * bots / (time.perf_counter() - t0)


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--bots", type=int, default=1)
    args = parser.parse_args()
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    port = free_port()
    server = mp.get_context("spawn").Process(target=_exchange, args=(port, args.messages), daemon=True)
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp, start_stack(
                Path(tmp), [AccountSpec("bybit-bench", "bybit", {"api_key": KEY, "api_secret": SECRET})],
                {"bench": POLICY}, start_proxy=False) as stack:
            emulator_url = stack.emulators["bybit-bench"][1].url
            stack.config_path.write_text(stack.config_path.read_text().replace(
                emulator_url, f"http://127.0.0.1:{port}"))
            stack.start_proxy(1)
            stack.wait_ready()
            direct = f"ws://127.0.0.1:{port}/v5/private"
            proxied = stack.proxy_url.replace("http://", "ws://") + "/x/bybit-bench/v5/private"
            headers = {"Proxy-Authorization": f"Bearer {stack.token('bench', ttl_s=3600)}"}
            d = asyncio.run(_pings(direct, {}, args.pings))
            p = asyncio.run(_pings(proxied, headers, args.pings))
            d_rate = asyncio.run(_flood(direct, {}, args.messages, args.bots))
            p_rate = asyncio.run(_flood(proxied, headers, args.messages, args.bots))
    finally:
        server.terminate()
    added50 = statistics.median(p) - statistics.median(d)
    added99 = _pct(p, 99) - _pct(d, 99)
    print(f"ping round trip, {args.pings} sequential:")
    print(f"  direct  p50 {statistics.median(d):.3f} ms  p99 {_pct(d, 99):.3f} ms")
    print(f"  proxied p50 {statistics.median(p):.3f} ms  p99 {_pct(p, 99):.3f} ms")
    print(f"  added per round trip  p50 {added50:+.3f} ms  p99 {added99:+.3f} ms")
    print(f"  added per relayed message (half)  p50 {added50 / 2:+.3f} ms  p99 {added99 / 2:+.3f} ms"
          "  (target: +0.3 ms p50)")
    print(f"exchange-to-bot messages, {args.messages} x {args.bots} stream(s):")
    print(f"  direct  {d_rate:,.0f} msg/s")
    print(f"  proxied {p_rate:,.0f} msg/s through one worker  (target: 20,000 msg/s)")


if __name__ == "__main__":
    main()
