"""Signed Binance order placement: through the full proxy pipeline vs. calling the emulator directly.

    python bench/bench_proxy.py [--seconds 5] [--connections 1,16,64] [--workers 1]

Starts OpenBao, the Binance emulator (its own process) and ``python -m proxy serve`` (its own
process), then drives each with a closed-loop aiohttp load generator (its own process per run)
and prints throughput and latency. "Added latency" is proxy p50/p99 minus direct p50/p99 at
the same concurrency. Everything shares this machine's cores, so figures are comparative.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from proxy.exchanges.binance import EXCHANGE  # noqa: E402
from proxy.model.request import Inbound, Stamp  # noqa: E402
from proxy.model.sensitive import Secret  # noqa: E402
from proxy.pipeline import auth as client_auth  # noqa: E402
from proxy_devkit.dev_vault import start_openbao  # noqa: E402
from proxy_devkit.emulator.server import free_port  # noqa: E402

BODY = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000"


def _load(url: str, headers: dict[str, str], direct: tuple[str, str] | None, conns: int,
          seconds: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    import aiohttp
    import uvloop

    creds = None
    if direct:
        creds = EXCHANGE.load_credentials({"api_key": Secret(direct[0]), "api_secret": Secret(direct[1])}, 1)
    prepared = EXCHANGE.prepare(Inbound("POST", "/api/v3/order", b"",
                                        (("content-type", "application/x-www-form-urlencoded"),),
                                        BODY.encode()))

    async def main() -> None:
        lat: list[float] = []
        errors = 0
        stop = time.perf_counter() + seconds
        conn = aiohttp.TCPConnector(limit=conns)
        async with aiohttp.ClientSession(connector=conn) as session:
            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < stop:
                    if creds is not None:  # sign like a bot holding the key itself
                        out_req = EXCHANGE.sign(prepared, creds, Stamp(int(time.time() * 1000)), "")
                        h = dict(out_req.headers)
                        body = out_req.body
                    else:
                        h, body = dict(headers), BODY.encode()
                    t0 = time.perf_counter()
                    async with session.post(url, data=body, headers=h) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                    lat.append(time.perf_counter() - t0)
            await asyncio.gather(*(worker() for _ in range(conns)))
        out.put({"n": len(lat), "errors": errors, "lat": lat})

    uvloop.run(main())


def run(url: str, headers: dict[str, str], direct: tuple[str, str] | None, conns: int,
        seconds: float) -> dict[str, float]:
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    p = mp.Process(target=_load, args=(url, headers, direct, conns, seconds, q))
    p.start()
    res = q.get()
    p.join()
    lat = sorted(res["lat"])
    return {
        "rps": res["n"] / seconds, "errors": res["errors"],
        "p50": statistics.median(lat) * 1000, "p99": lat[int(len(lat) * 0.99) - 1] * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--log-level", default="INFO", help="the proxy's PROXY_LOG_LEVEL (INFO: as served)")
    ap.add_argument("--connections", default="1,16,64")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--synchronous", choices=("full", "normal"), default="full",
                    help="[state] synchronous: sqlite durability of nonces and idempotency records")
    ap.add_argument("--weight-per-minute", type=int, default=10_000_000,
                    help="the account's outbound weight budget (0: none); the default never refuses "
                         "but pays for the shared counter, as a real Binance account does")
    args = ap.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    api_key, api_secret = "bench" + secrets.token_hex(8), secrets.token_hex(32)
    vault = start_openbao(work)
    emu_port, listen, admin = free_port(), free_port(), free_port()
    emu = subprocess.Popen([sys.executable, "-m", "proxy_devkit.emulator", "binance", "--port", str(emu_port),
                            "--api-key", api_key], stdin=subprocess.PIPE, cwd=REPO)
    assert emu.stdin is not None
    emu.stdin.write(api_secret.encode())
    emu.stdin.close()
    proxy = None
    try:
        vault.client().secrets.kv.v2.create_or_update_secret(
            path="exchanges/binance-main", secret={"api_key": api_key, "api_secret": api_secret},
            mount_point="secret")
        (work / "vault-token").write_text(vault.root_token)
        (work / "policies").mkdir()
        (work / "policies" / "bench.toml").write_text(
            'version = 1\nclient = "bench"\n[[grants]]\naccount = "binance-main"\n'
            'allow = ["read", "trade", "cancel"]\nsymbols = ["BTCUSDT"]\nmax_order_qty = "1"\n'
            'max_order_notional = "100000"\n')
        cfg = work / "proxy.toml"
        cfg.write_text(
            f'[server]\nlisten = "127.0.0.1:{listen}"\nadmin_listen = "127.0.0.1:{admin}"\n'
            f'[vault]\naddr = "{vault.addr}"\ntoken_file = "vault-token"\n'
            f'[state]\nsynchronous = "{args.synchronous}"\n'
            '[[accounts]]\nname = "binance-main"\nexchange = "binance"\nsecret = "exchanges/binance-main"\n'
            f'base_url = "http://127.0.0.1:{emu_port}"\nunsafe_custom_base_url = true\n'
            f'weight_per_minute = {args.weight_per_minute}\n')
        for f in (cfg, work / "vault-token"):
            f.chmod(0o600)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-m", "proxy", "init", "--config", str(cfg)], check=True,
                       env=env, capture_output=True)
        cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(cfg), "--workers", str(args.workers)]
        if os.geteuid() == 0:
            cmd.append("--unsafe-allow-root")
        # Logging as users run it (one JSON decision line per request), into a file as a
        # service manager's journal would take it.
        log_file = (work / "proxy.log").open("wb")
        proxy = subprocess.Popen(cmd, env={**env, "PROXY_LOG_LEVEL": args.log_level},
                                 stdout=subprocess.DEVNULL, stderr=log_file)
        deadline = time.time() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise SystemExit("proxy not ready")
            time.sleep(0.1)
        pem = vault.client().secrets.kv.v2.read_secret_version(
            path="proxy/token-signing", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]["private_key"]
        token = client_auth.issue(pem, client="bench", now=int(time.time()), ttl_s=3600,
                                  issuer="signing-proxy", audience="signing-proxy")
        headers = {"Proxy-Authorization": f"Bearer {token}",
                   "Content-Type": "application/x-www-form-urlencoded"}
        rows = []
        for c in conns:
            d = run(f"http://127.0.0.1:{emu_port}/api/v3/order", {}, (api_key, api_secret), c, args.seconds)
            p = run(f"http://127.0.0.1:{listen}/x/binance-main/api/v3/order", headers, None, c, args.seconds)
            rows.append((c, d, p))
        print(f"\nSigned Binance order placement, {args.seconds:g}s per run, proxy workers={args.workers}\n")
        print("| conns | direct req/s | proxy req/s | direct p50 ms | proxy p50 ms | added p50 ms "
              "| direct p99 ms | proxy p99 ms | added p99 ms | proxy errors |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for c, d, p in rows:
            print(f"| {c} | {d['rps']:,.0f} | {p['rps']:,.0f} | {d['p50']:.2f} | {p['p50']:.2f} | "
                  f"{p['p50'] - d['p50']:+.2f} | {d['p99']:.2f} | {p['p99']:.2f} | "
                  f"{p['p99'] - d['p99']:+.2f} | {p['errors']} |")
        print(json.dumps({"rows": [{"conns": c, "direct": d, "proxy": p} for c, d, p in rows]}),
              file=sys.stderr)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        emu.terminate()
        emu.wait()
        vault.stop()


if __name__ == "__main__":
    main()
