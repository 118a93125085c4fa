"""Audit checkpoints signed by a non-exportable Vault Transit key (a real OpenBao): ``init``
creates the key and publishes its public half; the proxy signs through Transit; an auditor
verifies with the published PEM alone; the key cannot be exported."""

from __future__ import annotations

from pathlib import Path

import hvac
import pytest

from proxy import config as config_mod
from proxy.audit import checkpoint, proofs, signed
from proxy.audit.checkpointer import CheckpointPolicy
from proxy.audit.writer import AuditWriter
from proxy.keys import audit_signing
from proxy.keys.transit.signer import TransitClient, TransitEd25519Key
from proxy.keys.vault import VaultSecretSource
from proxy.model.sensitive import Secret
from proxy_devkit.dev_vault import OpenBao


def _config(tmp_path: Path, bao: OpenBao) -> config_mod.Config:
    (tmp_path / "token").write_text(bao.root_token)
    (tmp_path / "token").chmod(0o600)
    path = tmp_path / "proxy.toml"
    path.write_text("\n".join([
        "[vault]", f'addr = "{bao.addr}"', 'auth = "token"', 'token_file = "token"',
        'mount = "secret"', "", "[audit]", 'dir = "audit"', 'checkpoint_signing = "transit"',
        'checkpoint_transit_key = "audit-checkpoint-test"', "",
    ]))
    path.chmod(0o600)
    return config_mod.load(path)


def test_transit_checkpoint_key_signs_and_auditors_verify_with_the_published_key(
    tmp_path: Path, bao: OpenBao, transit: TransitClient
) -> None:
    cfg = _config(tmp_path, bao)
    source = VaultSecretSource(cfg.vault)
    source.login()
    written = audit_signing.init_checkpoint_keys(source, cfg, transit)
    assert written == ["transit/keys/audit-checkpoint-test", "proxy/audit-verify"]
    assert audit_signing.init_checkpoint_keys(source, cfg, transit) == []  # idempotent
    info = transit.key_info("audit-checkpoint-test")
    assert info["type"] == "ed25519" and info["exportable"] is False
    with pytest.raises(hvac.exceptions.InvalidRequest):  # no export, not even for root
        bao.client().secrets.transit.export_key("audit-checkpoint-test", "signing-key")

    signer = audit_signing.load_signer(source, cfg, transit)
    assert isinstance(signer, TransitEd25519Key)
    key = Secret("ab" * 32)
    w = AuditWriter(tmp_path / "audit", key, "w1", checkpoints=CheckpointPolicy(signer, every_records=3))
    w.start_sync()
    for i in range(7):
        w.write_sync({"request_id": f"r{i}", "phase": "decision", "decision": "allow"})
    w.close_sync()
    assert w.checkpoint_error is None

    public = audit_signing.read_public_keys(source, cfg)  # what the auditor's policy grants
    report = signed.verify_signed(tmp_path / "audit", public)
    assert report.ok and report.checkpoints >= 3 and not report.unsigned, report.summary()
    (proof,) = proofs.prove(tmp_path / "audit", "r4")
    assert checkpoint.verify_proof(proof, public)["request_id"] == "r4"

    transit.call("POST", "keys/audit-checkpoint-test/rotate", {})  # a new key version...
    assert audit_signing.init_checkpoint_keys(source, cfg, transit) == ["proxy/audit-verify"]
    assert len(audit_signing.read_public_keys(source, cfg)) == 2  # ...both published
    assert signed.verify_signed(tmp_path / "audit", audit_signing.read_public_keys(source, cfg)).ok
