"""What Transit mode costs: signature latency local vs. Vault Transit, and end to end.

    python bench/bench_transit.py [--signatures 2000] [--seconds 5] [--connections 1,16]

1. Signatures: HMAC-SHA256 (Binance, Bybit, OKX...), HMAC-SHA512 (Kraken) and Ed25519
   (Binance) computed in process vs. by a local OpenBao's Transit engine (one call each, kept-
   alive connection, sequential), p50/p99; then Transit HMACs from 8 threads at once (req/s).
2. End to end: one proxy with two Binance accounts on the same emulator, one signing locally,
   one through Transit; signed order placement through each at the given concurrency, p50/p99
   and req/s; "added" is transit minus local.

OpenBao runs on this machine (loopback), so these are best cases: a Vault across a network
adds its round trip to every signed request. Everything shares the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_proxy import run  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

from proxy.exchanges import binance, kraken  # noqa: E402
from proxy.keys.transit.signer import TransitClient, signer  # noqa: E402
from proxy.keys.transit.wrap import import_key  # noqa: E402
from proxy.model.sensitive import Secret  # noqa: E402
from proxy.pipeline import auth as client_auth  # noqa: E402
from proxy_devkit.dev_vault import OpenBao, start_openbao  # noqa: E402
from proxy_devkit.emulator.server import free_port  # noqa: E402

MSG = b"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000&timestamp=1700000000000"


def _timed(fn: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(min(50, n)):  # warm up connections and caches
        fn()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return {"p50": statistics.median(lat) * 1000, "p99": lat[int(len(lat) * 0.99) - 1] * 1000}


def _threads(fn: Callable[[], object], threads: int, seconds: float) -> float:
    count = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            fn()
            count[i] += 1

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(count) / seconds


def signatures(vault: OpenBao, n: int) -> None:
    client = TransitClient(vault.addr, lambda: vault.root_token)
    hmac_secret = secrets.token_hex(32)
    kraken_secret = Secret(__import__("base64").b64encode(secrets.token_bytes(64)).decode())
    ed_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    locals_ = {
        "HMAC-SHA256 (hex)": binance.EXCHANGE.load_credentials(
            {"api_key": Secret("k"), "api_secret": Secret(hmac_secret)}, 1).key,
        "HMAC-SHA512 (Kraken)": kraken.EXCHANGE.load_credentials(
            {"api_key": Secret("k"), "api_secret": kraken_secret}, 1).key,
        "Ed25519": binance.EXCHANGE.load_credentials(
            {"api_key": Secret("k"), "api_secret": Secret(ed_pem)}, 1).key,
    }
    print(f"\nSignature latency, {n} sequential signatures each (ms)\n")
    print("| signature | local p50 | local p99 | transit p50 | transit p99 |")
    print("|---|---|---|---|---|")
    results = {}
    for i, (label, key) in enumerate(locals_.items()):
        name = f"bench-{i}"
        import_key(client, name, key)
        remote = signer(client, name)
        if "Ed25519" in label:
            fl: Callable[[], object] = lambda k=key: k.sign(MSG)  # type: ignore[attr-defined]  # noqa: E731
            fr: Callable[[], object] = lambda k=remote: k.sign(MSG)  # type: ignore[attr-defined]  # noqa: E731
            assert fl() == fr()
        else:
            alg = "sha512" if "512" in label else "sha256"
            fl = lambda k=key, a=alg: k.digest(MSG, a)  # type: ignore[attr-defined]  # noqa: E731
            fr = lambda k=remote, a=alg: k.digest(MSG, a)  # type: ignore[attr-defined]  # noqa: E731
            assert fl() == fr()
        loc, rem = _timed(fl, n), _timed(fr, n)
        results[label] = {"local": loc, "transit": rem}
        print(f"| {label} | {loc['p50']:.4f} | {loc['p99']:.4f} | {rem['p50']:.3f} | {rem['p99']:.3f} |")
    remote = signer(client, "bench-0")
    for threads in (1, 4, 8):
        rps = _threads(lambda: remote.digest(MSG), threads, 3)  # type: ignore[union-attr]
        print(f"\nTransit HMAC-SHA256 throughput from {threads} thread(s): {rps:,.0f} signatures/s", end="")
        results[f"threads_{threads}"] = {"rps": rps}  # type: ignore[dict-item]
    print()
    print(json.dumps({"signatures": results}), file=sys.stderr)


def end_to_end(vault: OpenBao, work: Path, seconds: float, conns: list[int]) -> None:
    api_key, api_secret = "bench" + secrets.token_hex(8), secrets.token_hex(32)
    emu_port, listen, admin = free_port(), free_port(), free_port()
    emu = subprocess.Popen([sys.executable, "-m", "proxy_devkit.emulator", "binance", "--port", str(emu_port),
                            "--api-key", api_key], stdin=subprocess.PIPE, cwd=REPO)
    assert emu.stdin is not None
    emu.stdin.write(api_secret.encode())
    emu.stdin.close()
    proxy = None
    try:
        kv = vault.client().secrets.kv.v2
        kv.create_or_update_secret(path="exchanges/bn-local", mount_point="secret",
                                   secret={"api_key": api_key, "api_secret": api_secret})
        (work / "vault-token").write_text(vault.root_token)
        (work / "policies").mkdir()
        (work / "policies" / "bench.toml").write_text("version = 1\nclient = \"bench\"\n" + "".join(
            f'[[grants]]\naccount = "{a}"\nallow = ["read", "trade", "cancel"]\nsymbols = ["BTCUSDT"]\n'
            'max_order_qty = "1"\nmax_order_notional = "100000"\n' for a in ("bn-local", "bn-transit")))
        cfg = work / "proxy.toml"
        cfg.write_text(
            f'[server]\nlisten = "127.0.0.1:{listen}"\nadmin_listen = "127.0.0.1:{admin}"\n'
            f'[vault]\naddr = "{vault.addr}"\ntoken_file = "vault-token"\n' + "".join(
                f'[[accounts]]\nname = "{a}"\nexchange = "binance"\nsecret = "exchanges/{a}"\n'
                f'base_url = "http://127.0.0.1:{emu_port}"\nunsafe_custom_base_url = true\n{extra}\n'
                for a, extra in (("bn-local", ""), ("bn-transit", 'signing = "transit"'))))
        for f in (cfg, work / "vault-token"):
            f.chmod(0o600)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-m", "proxy", "init", "--config", str(cfg)], check=True,
                       env=env, capture_output=True)
        subprocess.run([sys.executable, "-m", "proxy", "keys", "import-transit", "--config", str(cfg),
                        "--account", "bn-transit"], check=True, env=env, capture_output=True,
                       input=json.dumps({"api_key": api_key, "api_secret": api_secret}).encode())
        cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(cfg)]
        if os.geteuid() == 0:
            cmd.append("--unsafe-allow-root")
        proxy = subprocess.Popen(cmd, env={**env, "PROXY_LOG_LEVEL": "WARNING"},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        pem = kv.read_secret_version(path="proxy/token-signing", mount_point="secret",
                                     raise_on_deleted_version=True)["data"]["data"]["private_key"]
        token = client_auth.issue(pem, client="bench", now=int(time.time()), ttl_s=3600,
                                  issuer="signing-proxy", audience="signing-proxy")
        headers = {"Proxy-Authorization": f"Bearer {token}",
                   "Content-Type": "application/x-www-form-urlencoded"}
        rows = []
        for c in conns:
            loc = run(f"http://127.0.0.1:{listen}/x/bn-local/api/v3/order", headers, None, c, seconds)
            rem = run(f"http://127.0.0.1:{listen}/x/bn-transit/api/v3/order", headers, None, c, seconds)
            rows.append((c, loc, rem))
        print(f"\nSigned Binance order placement through the proxy, {seconds:g}s per run, 1 worker\n")
        print("| conns | local req/s | transit req/s | local p50 ms | transit p50 ms | added p50 ms "
              "| local p99 ms | transit p99 ms | added p99 ms | errors (local/transit) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for c, loc, rem in rows:
            print(f"| {c} | {loc['rps']:,.0f} | {rem['rps']:,.0f} | {loc['p50']:.2f} | {rem['p50']:.2f} | "
                  f"{rem['p50'] - loc['p50']:+.2f} | {loc['p99']:.2f} | {rem['p99']:.2f} | "
                  f"{rem['p99'] - loc['p99']:+.2f} | {loc['errors']}/{rem['errors']} |")
        print(json.dumps({"end_to_end": [{"conns": c, "local": a, "transit": b} for c, a, b in rows]}),
              file=sys.stderr)
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        emu.terminate()
        emu.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--signatures", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--connections", default="1,16")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-transit-"))
    vault = start_openbao(work)
    try:
        vault.client().sys.enable_secrets_engine("transit")
        signatures(vault, args.signatures)
        end_to_end(vault, work, args.seconds, [int(c) for c in args.connections.split(",")])
    finally:
        vault.stop()


if __name__ == "__main__":
    main()
