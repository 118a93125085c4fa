"""The whole system on loopback for integration tests: OpenBao, emulators, a real proxy process.

Usage::

    from tests.support.stack import AccountSpec, start_stack

    with start_stack(tmp_path, [AccountSpec("binance-main", "binance", {"api_key": K, "api_secret": S})],
                     policies={"bot": POLICY_TOML}) as stack:
        token = stack.token("bot")
        r = httpx.get(stack.proxy_url + "/x/binance-main/api/v3/account",
                      headers={"Proxy-Authorization": f"Bearer {token}"})
        stack.emulator("binance-main").recorder.all()   # what the exchange received

Each account gets its own strict emulator (``proxy_devkit.emulator.<exchange>.create``) and its
secret written to OpenBao at ``secret/exchanges/<name>``. ``python -m proxy init`` runs, then
``python -m proxy serve`` in a subprocess (``workers`` of them), and the stack waits for
``/readyz``. ``stack.proxy_log()`` is everything the proxy wrote to stdout/stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from proxy.pipeline import auth as client_auth
from proxy_devkit.dev_vault import OpenBao, start_openbao, start_persistent_openbao
from proxy_devkit.emulator.faults import Faults
from proxy_devkit.emulator.server import BackgroundServer, free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class AccountSpec:
    name: str
    exchange: str
    fields: Mapping[str, str]
    extra_toml: str = ""          # more lines for this [[accounts]] table
    environment: str = "live"     # the account's environment ("testnet": the emulator in demo mode)
    emulator_options: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments of create()


@dataclass
class Stack:
    dir: Path
    config_path: Path
    vault: OpenBao
    proxy_url: str
    admin_url: str
    emulators: dict[str, tuple[Any, BackgroundServer]]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    faults: dict[str, Faults] = field(default_factory=dict)
    _workers: int = 1  # of the last start_proxy: wait_ready waits for every one of them

    def emulator(self, account: str) -> Any:
        """The emulator state of ``account`` (``.recorder`` lists what it received)."""
        return self.emulators[account][0]

    def token(self, client: str, ttl_s: int = 3600, now: int | None = None) -> str:
        private = self.vault.client().secrets.kv.v2.read_secret_version(
            path="proxy/token-signing", mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]["private_key"]
        return client_auth.issue(
            private, client=client, now=now if now is not None else int(time.time()), ttl_s=ttl_s,
            issuer="signing-proxy", audience="signing-proxy",
        )

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``python -m proxy <args> --config <this config>``."""
        return subprocess.run(
            [sys.executable, "-m", "proxy", *args, "--config", str(self.config_path)],
            input=stdin, capture_output=True, text=True, cwd=REPO, env=_env(self), timeout=60, check=False,
        )

    def edit_config(self, old: str, new: str) -> None:
        """Replace ``old`` (which must occur) in the configuration file, e.g. to switch auth."""
        text = self.config_path.read_text()
        if old not in text:
            raise ValueError(f"{old!r} is not in {self.config_path}")
        self.config_path.write_text(text.replace(old, new))

    def audit_records(self) -> list[dict[str, Any]]:
        """Every audit record, through ``python -m proxy audit query``."""
        out = self.cli("audit", "query")
        if out.returncode != 0:
            raise RuntimeError(f"audit query failed: {out.stderr}")
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def readyz(self) -> tuple[int, dict[str, Any]]:
        r = httpx.get(self.admin_url + "/readyz", timeout=5)
        return r.status_code, r.json()

    def metric(self, name: str) -> list[tuple[str, float]]:
        """Every series of ``name`` on /metrics as (labels text, value)."""
        text = httpx.get(self.admin_url + "/metrics", timeout=5).text
        found = []
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                labels, _, value = line.rpartition(" ")
                found.append((labels[len(name):], float(value)))
        return found

    def proxy_log(self) -> str:
        return (self.dir / "proxy.log").read_text(errors="replace")

    def start_proxy(self, workers: int = 1) -> subprocess.Popen[bytes]:
        log = (self.dir / "proxy.log").open("ab")
        cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(self.config_path),
               "--workers", str(workers)]
        if os.geteuid() == 0:
            cmd.append("--unsafe-allow-root")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env=_env(self), start_new_session=True)
        self.procs.append(proc)
        self._workers = workers
        return proc

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"proxy exited early:\n{self.proxy_log()[-3000:]}")
            try:
                r = httpx.get(self.admin_url + "/readyz", timeout=1)
                # with several workers: every one of them has reported ready
                if r.status_code == 200 and len(r.json().get("workers", [None])) >= self._workers:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"proxy not ready in {timeout_s}s:\n{self.proxy_log()[-3000:]}")

    def stop_proxy(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        self.procs.clear()


def _env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def write_config(
    directory: Path, vault_addr: str, accounts: list[AccountSpec], urls: Mapping[str, str],
    listen: int, admin: int, state_toml: str = 'backend = "sqlite"\npath = "state.db"',
) -> Path:
    lines = [
        "[server]", f'listen = "127.0.0.1:{listen}"', f'admin_listen = "127.0.0.1:{admin}"', "",
        "[vault]", f'addr = "{vault_addr}"', 'auth = "token"', 'token_file = "vault-token"',
        'mount = "secret"', "", "[state]", state_toml, "", "[audit]", 'dir = "audit"', "",
        "[policies]", 'dir = "policies"', "",
    ]
    for acct in accounts:
        lines += [
            "[[accounts]]", f'name = "{acct.name}"', f'exchange = "{acct.exchange}"',
            f'environment = "{acct.environment}"', f'secret = "exchanges/{acct.name}"',
            f'base_url = "{urls[acct.name]}"', "unsafe_custom_base_url = true", acct.extra_toml, "",
        ]
    path = directory / "proxy.toml"
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


@contextmanager
def start_stack(
    tmp_path: Path, accounts: list[AccountSpec], policies: Mapping[str, str], *,
    workers: int = 1, state_toml: str | None = None, start_proxy: bool = True,
    persistent_vault: bool = False, vault_toml: str = "",
) -> Iterator[Stack]:
    """``persistent_vault``: a Raft OpenBao that survives ``stack.vault.stop()`` and
    ``.restart()``; ``vault_toml``: more lines for the [vault] table (e.g. grace_period_s)."""
    vault = start_persistent_openbao(tmp_path) if persistent_vault else start_openbao(tmp_path)
    emulators: dict[str, tuple[Any, BackgroundServer]] = {}
    faults: dict[str, Faults] = {}
    stack: Stack | None = None
    try:
        for acct in accounts:
            module = importlib.import_module(f"proxy_devkit.emulator.{acct.exchange}")
            state, app = module.create({acct.fields["api_key"]: dict(acct.fields)}, **acct.emulator_options)
            faults[acct.name] = Faults()  # stack.faults[account].arm(...) loses answers on purpose
            emulators[acct.name] = (state, BackgroundServer(faults[acct.name].wrap(app)).start())
            vault.client().secrets.kv.v2.create_or_update_secret(
                path=f"exchanges/{acct.name}", secret=dict(acct.fields), mount_point="secret"
            )
        (tmp_path / "vault-token").write_text(vault.root_token)
        (tmp_path / "vault-token").chmod(0o600)
        pol_dir = tmp_path / "policies"
        pol_dir.mkdir(exist_ok=True)
        for client, text in policies.items():
            (pol_dir / f"{client}.toml").write_text(text)
        listen, admin = free_port(), free_port()
        config = write_config(
            tmp_path, vault.addr, accounts, {n: s.url for n, (_, s) in emulators.items()},
            listen, admin, **({"state_toml": state_toml} if state_toml else {}),
        )
        if vault_toml:
            config.write_text(config.read_text().replace('mount = "secret"', f'mount = "secret"\n{vault_toml}'))
        stack = Stack(tmp_path, config, vault, f"http://127.0.0.1:{listen}",
                      f"http://127.0.0.1:{admin}", emulators, faults=faults)
        init = stack.cli("init")
        if init.returncode != 0:
            raise RuntimeError(f"init failed: {init.stderr}")
        if start_proxy:
            stack.start_proxy(workers)
            stack.wait_ready()
        yield stack
    finally:
        if stack is not None:
            stack.stop_proxy()
        for _, server in emulators.values():
            server.stop()
        vault.stop()
