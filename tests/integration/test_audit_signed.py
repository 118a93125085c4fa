"""Signed audit checkpoints end to end (issue 19): two real workers sign with the key ``init``
put in OpenBao, a witness directory gets every checkpoint, and an auditor whose Vault policy
(deploy/vault/auditor-policy.hcl) grants only the public key verifies the trail and a single
order's inclusion proof; with the chain key denied, it could not forge a trail."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.stack import REPO, AccountSpec, Stack, _env, start_stack

POLICY = """
version = 1
client = "grid-bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT"]
max_order_qty = "0.5"
"""


def _order(stack: Stack, token: str, i: int) -> str:
    body = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.01", "price": "2000", "newClientOrderId": f"sig-{i}"}
    r = httpx.post(stack.proxy_url + "/x/binance-main/api/v3/order", data=body, timeout=60,
                   headers={"Proxy-Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.headers["x-proxy-request-id"]


def _auditor_cli(stack: Stack, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an auditor: the same config, but a Vault token with the auditor policy."""
    (stack.dir / "auditor-token").write_text(token)
    (stack.dir / "auditor-token").chmod(0o600)  # the one file-mode rule applies to every command
    config = stack.dir / "auditor.toml"
    config.write_text(stack.config_path.read_text().replace('"vault-token"', '"auditor-token"'))
    config.chmod(0o600)
    return subprocess.run([sys.executable, "-m", "proxy", *args, "--config", str(config)],
                          capture_output=True, text=True, cwd=REPO, env=_env(stack), timeout=60,
                          check=False)


def test_audit_signed_checkpoints_verify_for_an_auditor_holding_only_the_public_key(
    tmp_path: Path,
) -> None:
    account = AccountSpec("binance-main", "binance", {"api_key": "k" * 20, "api_secret": "s" * 64})
    with start_stack(tmp_path, [account], {"grid-bot": POLICY}, start_proxy=False) as stack:
        (tmp_path / "witness").mkdir()
        stack.edit_config('dir = "audit"', 'dir = "audit"\nwitness_dir = "witness"\n'
                                           "witness_vault = true\ncheckpoint_every_records = 5")
        stack.start_proxy(2)
        stack.wait_ready()
        token = stack.token("grid-bot")
        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(lambda i: _order(stack, token, i), range(24)))
        stack.stop_proxy()  # every worker seals and signs its last checkpoint

        root = stack.vault.client()
        root.sys.create_or_update_policy(
            "auditor", (REPO / "deploy/vault/auditor-policy.hcl").read_text())
        auditor = root.auth.token.create(policies=["auditor"], ttl="5m")["auth"]["client_token"]
        verify = _auditor_cli(stack, auditor, "audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert verify.stdout.startswith("OK (public key"), verify.stdout  # no HMAC: key denied
        assert "from the witness" in verify.stdout and "not yet signed" not in verify.stdout

        # with the key alone, no Vault and no config: what a regulator would run
        pem = tmp_path / "checkpoint.pub"
        pem.write_text(root.secrets.kv.v2.read_secret_version(
            path="proxy/audit-verify", mount_point="secret", raise_on_deleted_version=True,
        )["data"]["data"]["public_key"])
        audit, witness = tmp_path / "audit", tmp_path / "witness"
        proof = stack.cli("audit", "prove", ids[7])
        assert proof.returncode == 0, proof.stderr
        records = [json.loads(json.loads(line)["record"]) for line in proof.stdout.splitlines()]
        assert [r["phase"] for r in records] == ["decision", "outcome"]
        assert records[1]["exchange_order_id"]  # Binance's orderId, from its own field
        proof_file = tmp_path / "order.proof"
        proof_file.write_text(proof.stdout)
        checked = subprocess.run(
            [sys.executable, "-m", "proxy", "audit", "verify-proof", str(proof_file),
             "--public-key", str(pem)], capture_output=True, text=True, cwd=REPO,
            env=_env(stack), timeout=60, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr

        # an operator (root here) also gets the HMAC verify; both pass
        both = stack.cli("audit", "verify")
        assert both.returncode == 0 and both.stdout.startswith("OK:") and "OK (public key" in both.stdout

        # cut a whole chain and its local checkpoints: only the witness still knows it
        writer = sorted(p.name.split(".")[0] for p in audit.glob("*.000000.jsonl"))[0]
        for path in audit.glob(f"{writer}.*"):
            path.unlink()
        cut = subprocess.run(
            [sys.executable, "-m", "proxy", "audit", "verify", str(audit), "--public-key", str(pem),
             "--witness", str(witness)], capture_output=True, text=True, cwd=REPO, env=_env(stack),
            timeout=60, check=False)
        assert cut.returncode == 1 and f"chain {writer} is gone" in cut.stdout, cut.stdout

        # ...and with the witness folder's copy gone too, Vault still holds its newest checkpoint
        trail = json.loads((audit / "TRAIL.json").read_text())["trail_id"]
        (witness / trail / f"{writer}.jsonl").unlink()
        vault_only = _auditor_cli(stack, auditor, "audit", "verify", "--witness", str(tmp_path / "none"))
        assert vault_only.returncode == 1, vault_only.stdout + vault_only.stderr
        assert f"chain {writer} is gone" in vault_only.stdout and f"vault:{writer}" in vault_only.stdout
