"""``audit verify --public-key``, ``audit prove`` and ``audit verify-proof``: an auditor's and a
counterparty's commands, with a public key file and no Vault, no configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.audit import checkpoint
from proxy.audit.checkpointer import CheckpointPolicy
from proxy.cli import main
from proxy.model.sensitive import Secret
from proxy.model.signers import Ed25519Key
from tests.audit.conftest import decision, lines, outcome, put_lines, write_trail


@pytest.fixture
def trail(tmp_path: Path, key: Secret, signer: Ed25519Key) -> tuple[Path, Path, Path]:
    d, wit, pem = tmp_path / "audit", tmp_path / "witness", tmp_path / "checkpoint.pub"
    wit.mkdir()
    write_trail(d, key, "w1", records=12, make=lambda i: decision(i) if i % 2 else outcome(i - 1),
                checkpoints=CheckpointPolicy(signer, every_records=4, witness_dir=wit))
    pem.write_text(checkpoint.public_pem(signer.public_key()))
    return d, wit, pem


def test_cli_verify_with_the_public_key_only(trail: tuple[Path, Path, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    d, wit, pem = trail
    assert main(["audit", "verify", str(d), "--public-key", str(pem), "--witness", str(wit)]) == 0
    assert capsys.readouterr().out.startswith("OK (public key ")
    seg = d / "w1.000000.jsonl"
    content = lines(seg)
    content[3] = content[3].replace(b'"upstream_status":200', b'"upstream_status":500')
    put_lines(seg, content)
    assert main(["audit", "verify", str(d), "--public-key", str(pem), "--witness", str(wit)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED") and "w1.000000.jsonl:4" in out


def test_cli_verify_needs_a_config_or_a_key_and_a_directory(
    trail: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, _, _ = trail
    with pytest.raises(SystemExit) as exc:
        main(["audit", "verify", str(d)])
    assert exc.value.code == 2 and "--config" in capsys.readouterr().err


def test_cli_prove_then_verify_proof_and_an_altered_proof_fails(
    trail: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d, wit, pem = trail
    assert main(["audit", "prove", "req-5", str(d), "--witness", str(wit)]) == 0
    proof = tmp_path / "req-5.proof"
    proof.write_text(capsys.readouterr().out)
    assert len(proof.read_text().splitlines()) == 2  # the decision and the outcome
    assert main(["audit", "verify-proof", str(proof), "--public-key", str(pem)]) == 0
    out = capsys.readouterr().out
    assert out.count(": OK: line ") == 2 and '"request_id": "req-5"' in out
    proof.write_text(proof.read_text().replace('\\"decision\\":\\"allow\\"', '\\"decision\\":\\"deny\\"'))
    assert main(["audit", "verify-proof", str(proof), "--public-key", str(pem)]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["audit", "prove", "req-404", str(d)]) == 1
