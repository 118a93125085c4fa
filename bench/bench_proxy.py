"""Signed Binance order placement through the proxy, against the floor, in one run.

    python bench/bench_proxy.py [--seconds 3] [--rounds 3] [--connections 1,16] [--hostile 50]
                                [--configs sqlite:1,sqlite:2,redis:1,redis:2] [--synchronous full]

For each proxy configuration (state backend : workers) the bench starts a fresh Binance
emulator (it checks every signature), the floor (``bench/floor.py``: a bare aiohttp + uvloop
signing forwarder, no auth, policy, state or audit) and ``python -m proxy serve``, each its own
process, and drives them with a closed-loop aiohttp load generator (its own process per run):

- **direct**: the generator signs itself and calls the emulator (the upstream's own cost);
- **floor**: unsigned orders through the bare forwarder;
- **proxy**: unsigned orders through the whole pipeline (token, policy, client order id and
  idempotency record, weight budget, durable audit, signing, forwarding).

The three (four with ``--baseline``: another checkout of the proxy, run beside this one) are
interleaved, round after round, at each connection count, so a noisy
neighbour on this shared machine hits all of them alike; the table shows the median over
rounds. "Added" latency is p50/p99 minus direct's at the same concurrency; the proxy's cost is
then read against the floor: "vs floor" is the proxy's added minus the floor's added latency,
and its throughput as a ratio of the floor's. CPU ms per order sums user and system time of
the serving processes (supervisor and workers; the floor's one process) over the run.
The bench also measures this disk's fdatasync (the durability floor of every order).
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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from proxy.exchanges.binance import EXCHANGE  # noqa: E402
from proxy.model.request import Inbound, Stamp  # noqa: E402
from proxy.model.sensitive import Secret  # noqa: E402
from proxy.pipeline import auth as client_auth  # noqa: E402
from proxy_devkit.dev_vault import OpenBao, start_openbao  # noqa: E402
from proxy_devkit.emulator.server import free_port  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile import hostile  # noqa: E402

BODY = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


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


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` and all their descendants (from /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) * TICK_S
    total, todo, seen = 0.0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


def run(url: str, headers: dict[str, str], direct: tuple[str, str] | None, conns: int,
        seconds: float, cpu_pids: list[int]) -> dict[str, float]:
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    p = mp.Process(target=_load, args=(url, headers, direct, conns, seconds, q))
    cpu0 = _cpu_s(cpu_pids)
    p.start()
    res = q.get()
    p.join()
    cpu = _cpu_s(cpu_pids) - cpu0
    lat = sorted(res["lat"])
    n = max(res["n"], 1)
    return {
        "rps": res["n"] / seconds, "errors": res["errors"],
        "p50": statistics.median(lat) * 1000, "p99": lat[max(int(len(lat) * 0.99) - 1, 0)] * 1000,
        "cpu_ms": cpu * 1000 / n,
    }


def fsync_ms(directory: Path, count: int = 400) -> tuple[float, float]:
    """p50 and p99 of append-200-bytes-then-fdatasync on this disk, in ms."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    took = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 199 + b"\n")
            os.fdatasync(fd)
            took.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    took.sort()
    return statistics.median(took), took[int(len(took) * 0.99) - 1]


@dataclass(frozen=True)
class Upstreams:
    emulator: subprocess.Popen[bytes]
    emu_port: int
    floor: subprocess.Popen[bytes]
    floor_port: int


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 30) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


@contextmanager
def upstreams(api_key: str, api_secret: str) -> Iterator[Upstreams]:
    """A fresh emulator (no orders from an earlier run) and a floor forwarding to it."""
    emu_port, floor_port = free_port(), free_port()
    emu = subprocess.Popen([sys.executable, "-m", "proxy_devkit.emulator", "binance", "--port", str(emu_port),
                            "--api-key", api_key], stdin=subprocess.PIPE, cwd=REPO)
    assert emu.stdin is not None
    emu.stdin.write(api_secret.encode())
    emu.stdin.close()
    floor = subprocess.Popen([sys.executable, str(REPO / "bench" / "floor.py"), "--port", str(floor_port),
                              "--upstream", f"http://127.0.0.1:{emu_port}", "--api-key", api_key],
                             stdin=subprocess.PIPE, cwd=REPO)
    assert floor.stdin is not None
    floor.stdin.write(api_secret.encode() + b"\n")
    floor.stdin.close()
    try:
        _wait_http(f"http://127.0.0.1:{emu_port}/api/v3/ping", emu, "emulator")
        _wait_http(f"http://127.0.0.1:{floor_port}/", floor, "floor")
        yield Upstreams(emu, emu_port, floor, floor_port)
    finally:
        for proc in (floor, emu):
            proc.terminate()
            proc.wait()


@contextmanager
def redis_server(work: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                import redis

                redis.Redis(port=port).ping()
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def proxy_server(work: Path, vault: OpenBao, emu_port: int, backend: str, workers: int,
                 synchronous: str, weight_per_minute: int, redis_url: str | None, repo: Path = REPO,
                 log_level: str = "INFO") -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m proxy serve`` (from ``repo``) on its own state and audit directory; yields
    (process, port)."""
    work.mkdir(parents=True, exist_ok=True)
    listen, admin = free_port(), free_port()
    (work / "vault-token").write_text(vault.root_token)
    (work / "policies").mkdir(exist_ok=True)
    (work / "policies" / "bench.toml").write_text(
        'version = 1\nclient = "bench"\n[[grants]]\naccount = "binance-main"\n'
        'allow = ["read", "trade", "cancel"]\nsymbols = ["BTCUSDT"]\nmax_order_qty = "1"\n'
        'max_order_notional = "100000"\n')
    state = (f'[state]\nbackend = "redis"\nurl = "{redis_url}"\n' if backend == "redis"
             else f'[state]\nsynchronous = "{synchronous}"\n')
    cfg = work / "proxy.toml"
    cfg.write_text(
        f'[server]\nlisten = "127.0.0.1:{listen}"\nadmin_listen = "127.0.0.1:{admin}"\n'
        f'[vault]\naddr = "{vault.addr}"\ntoken_file = "vault-token"\n' + state +
        '[[accounts]]\nname = "binance-main"\nexchange = "binance"\nsecret = "exchanges/binance-main"\n'
        f'base_url = "http://127.0.0.1:{emu_port}"\nunsafe_custom_base_url = true\n'
        f'weight_per_minute = {weight_per_minute}\n')
    for f in (cfg, work / "vault-token"):
        f.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    subprocess.run([sys.executable, "-m", "proxy", "init", "--config", str(cfg)], check=True,
                   env=env, capture_output=True, cwd=repo)
    cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(cfg), "--workers", str(workers)]
    if os.geteuid() == 0:
        cmd.append("--unsafe-allow-root")
    # Logging as users run it (one JSON decision line per request), into a file as a service
    # manager's journal would take it.
    log_file = (work / "proxy.log").open("wb")
    proc = subprocess.Popen(cmd, env={**env, "PROXY_LOG_LEVEL": log_level}, cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("proxy not ready")
            time.sleep(0.1)
        yield proc, listen
    finally:
        proc.terminate()
        proc.wait()
        log_file.close()


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", default="1,16")
    ap.add_argument("--configs", default="sqlite:1,sqlite:2,redis:1,redis:2",
                    help="proxy configurations, state backend:workers, comma-separated")
    ap.add_argument("--synchronous", choices=("full", "normal"), default="full",
                    help="[state] synchronous of the sqlite store")
    ap.add_argument("--weight-per-minute", type=int, default=10_000_000,
                    help="the account's outbound weight budget (0: none); the default never refuses "
                         "but pays for the shared counter, as a real Binance account does")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    ap.add_argument("--log-level", default="INFO", help="the proxy's PROXY_LOG_LEVEL (INFO: as served)")
    ap.add_argument("--hostile", type=int, default=0,
                    help="connections without a token streaming endless headers during the proxy runs "
                         "(bench/hostile.py); compare the proxy's p99 with a run without")
    ap.add_argument("--baseline", type=Path,
                    help="another checkout of the proxy (e.g. `git worktree add /tmp/before main`), run "
                         "beside this one in the same interleaved rounds: before and after in one run")
    args = ap.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    configs = [(b, int(w)) for b, w in (c.split(":") for c in args.configs.split(","))]
    root = Path(tempfile.mkdtemp(prefix="bench-"))
    api_key, api_secret = "bench" + secrets.token_hex(8), secrets.token_hex(32)
    sync_p50, sync_p99 = fsync_ms(root)
    print(f"fdatasync of a 200-byte append on this disk: p50 {sync_p50:.2f} ms, p99 {sync_p99:.2f} ms",
          flush=True)
    (root / "vault").mkdir()
    vault = start_openbao(root / "vault")
    results: list[dict[str, object]] = []
    try:
        vault.client().secrets.kv.v2.create_or_update_secret(
            path="exchanges/binance-main", secret={"api_key": api_key, "api_secret": api_secret},
            mount_point="secret")
        with redis_server(root) if any(b == "redis" for b, _ in configs) else _none() as redis_url:
            for n, (backend, workers) in enumerate(configs):
                work = root / f"run{n}"
                work.mkdir()
                with upstreams(api_key, api_secret) as up, proxy_server(
                        work, vault, up.emu_port, backend, workers, args.synchronous,
                        args.weight_per_minute, redis_url, log_level=args.log_level
                        ) as (proc, listen), ExitStack() as stack:
                    base = None if args.baseline is None else stack.enter_context(proxy_server(
                        work / "baseline", vault, up.emu_port, backend, workers, args.synchronous,
                        args.weight_per_minute, redis_url, args.baseline.resolve(), args.log_level))
                    headers = _token_headers(vault)
                    for c in conns:
                        per: dict[str, list[dict[str, float]]] = {"direct": [], "floor": [], "proxy": []}
                        if base is not None:
                            per["baseline"] = []
                        for _ in range(args.rounds):
                            per["direct"].append(run(f"http://127.0.0.1:{up.emu_port}/api/v3/order", {},
                                                     (api_key, api_secret), c, args.seconds, []))
                            per["floor"].append(run(f"http://127.0.0.1:{up.floor_port}/api/v3/order",
                                                    {"Content-Type": "application/x-www-form-urlencoded"},
                                                    None, c, args.seconds, [up.floor.pid]))
                            with hostile(listen, args.hostile):
                                per["proxy"].append(run(
                                    f"http://127.0.0.1:{listen}/x/binance-main/api/v3/order",
                                    headers, None, c, args.seconds, [proc.pid]))
                            if base is not None:
                                per["baseline"].append(run(
                                    f"http://127.0.0.1:{base[1]}/x/binance-main/api/v3/order", headers,
                                    None, c, args.seconds, [base[0].pid]))
                        results.append({"backend": backend, "workers": workers, "conns": c, **per})
                        _print_row(results[-1], args.synchronous)
    finally:
        vault.stop()
    print(f"\nSigned Binance order placement; median of {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s; fdatasync p50 {sync_p50:.2f} / p99 {sync_p99:.2f} ms\n")
    print("| state, workers | conns | floor req/s | proxy req/s | proxy/floor | floor added p50 / p99 ms "
          "| proxy added p50 / p99 ms | proxy vs floor p50 / p99 ms | CPU ms/order floor / proxy "
          "| proxy errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(_row(r, args.synchronous))
        if "baseline" in r:
            print(_row(r, args.synchronous, "baseline"))
    if args.json is not None:
        args.json.write_text(json.dumps({"fsync_ms": [sync_p50, sync_p99], "results": results}, indent=1))


@contextmanager
def _none() -> Iterator[None]:
    yield None


def _token_headers(vault: OpenBao) -> dict[str, str]:
    pem = vault.client().secrets.kv.v2.read_secret_version(
        path="proxy/token-signing", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]["private_key"]
    token = client_auth.issue(pem, client="bench", now=int(time.time()), ttl_s=3600,
                              issuer="signing-proxy", audience="signing-proxy")
    return {"Proxy-Authorization": f"Bearer {token}", "Content-Type": "application/x-www-form-urlencoded"}


def _row(r: dict[str, object], synchronous: str, which: str = "proxy") -> str:
    d, f, p = (r[k] for k in ("direct", "floor", which))
    assert isinstance(d, list) and isinstance(f, list) and isinstance(p, list)
    m = {name: {k: _median(rows, k) for k in ("rps", "p50", "p99", "cpu_ms")}
         for name, rows in (("d", d), ("f", f), ("p", p))}
    fa50, fa99 = m["f"]["p50"] - m["d"]["p50"], m["f"]["p99"] - m["d"]["p99"]
    pa50, pa99 = m["p"]["p50"] - m["d"]["p50"], m["p"]["p99"] - m["d"]["p99"]
    label = f"{r['backend']}{' ' + synchronous if r['backend'] == 'sqlite' else ''}, {r['workers']}"
    if which != "proxy":
        label += f" ({which})"
    errors = sum(int(x["errors"]) for x in p)
    return (f"| {label} | {r['conns']} | {m['f']['rps']:,.0f} | {m['p']['rps']:,.0f} | "
            f"{m['p']['rps'] / m['f']['rps']:.2f} | {fa50:+.2f} / {fa99:+.2f} | {pa50:+.2f} / {pa99:+.2f} | "
            f"{pa50 - fa50:+.2f} / {pa99 - fa99:+.2f} | {m['f']['cpu_ms']:.2f} / {m['p']['cpu_ms']:.2f} | "
            f"{errors} |")


def _print_row(r: dict[str, object], synchronous: str) -> None:
    print(_row(r, synchronous), flush=True)
    if "baseline" in r:
        print(_row(r, synchronous, "baseline"), flush=True)


if __name__ == "__main__":
    main()
