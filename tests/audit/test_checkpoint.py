"""Signed checkpoints and inclusion proofs on plain values (no files)."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.audit import checkpoint, merkle
from proxy.model.signers import Ed25519Key
from tests.audit.conftest import public

LINES = [orjson.dumps({"_seq": i, "_mac": "00" * 32, "request_id": f"req-{i}"}) for i in range(11)]
LEAVES = [merkle.leaf_hash(line) for line in LINES]


def _cp(signer: Ed25519Key, size: int = 11) -> checkpoint.Checkpoint:
    return checkpoint.sign(signer, trail="t-1", writer="w1", size=size,
                           root=merkle.root_of(LEAVES[:size]), ts="2026-12-07T02:00:00.000000Z")


def test_checkpoint_round_trips_and_verifies_with_the_public_key_only(signer: Ed25519Key) -> None:
    cp = _cp(signer)
    back = checkpoint.parse_line(cp.line())
    assert back == cp
    assert checkpoint.check_signature(back, public(signer)) is None


def test_checkpoint_signed_by_another_key_is_named_as_such(signer: Ed25519Key) -> None:
    other = Ed25519Key(ed25519.Ed25519PrivateKey.generate())
    reason = checkpoint.check_signature(_cp(other), public(signer))
    assert reason is not None and "another key" in reason


@pytest.mark.parametrize("change", [{"size": 10}, {"writer": "w2"}, {"trail": "t-2"},
                                    {"ts": "2026-12-07T03:00:00.000000Z"},
                                    {"root": bytes(32)}])
def test_checkpoint_any_edited_field_breaks_the_signature(signer: Ed25519Key, change: dict[str, object]) -> None:
    edited = dataclasses.replace(_cp(signer), **change)  # type: ignore[arg-type]
    reason = checkpoint.check_signature(edited, public(signer))
    assert reason is not None and "does not verify" in reason


def test_checkpoint_public_key_bundle_holds_every_rotated_key(signer: Ed25519Key) -> None:
    old = Ed25519Key(ed25519.Ed25519PrivateKey.generate())
    pem = checkpoint.public_pem(old.public_key()) + checkpoint.public_pem(signer.public_key())
    keys = checkpoint.public_keys_from_pem(pem)
    assert set(keys) == {checkpoint.key_id(old.public_key()), checkpoint.key_id(signer.public_key())}
    assert checkpoint.check_signature(_cp(old), keys) is None
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.public_keys_from_pem("no key here")


@pytest.mark.parametrize("bad", [b"{}", b"[1]", b"not json",
                                 b'{"trail":"t","writer":"w","size":-1,"root":"00","ts":"x","key_id":"k","sig":""}'])
def test_checkpoint_malformed_lines_are_refused(bad: bytes) -> None:
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.parse_line(bad)


def test_proof_verifies_for_every_line_and_fails_for_an_altered_record(signer: Ed25519Key) -> None:
    cp, keys = _cp(signer), public(signer)
    for i, line in enumerate(LINES):
        proof = checkpoint.make_proof(LEAVES, i, line, cp)
        again = checkpoint.parse_proof(orjson.loads(orjson.dumps(proof.as_json())))
        assert checkpoint.verify_proof(again, keys)["request_id"] == f"req-{i}"
    proof = checkpoint.make_proof(LEAVES, 4, LINES[4], cp)
    altered = dataclasses.replace(proof, record=LINES[4].replace(b"req-4", b"req-X"))
    with pytest.raises(checkpoint.CheckpointError, match="altered"):
        checkpoint.verify_proof(altered, keys)
    swapped = dataclasses.replace(proof, record=LINES[5], index=5)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.verify_proof(swapped, keys)
    wrong_seq = dataclasses.replace(proof, index=3)
    with pytest.raises(checkpoint.CheckpointError, match="_seq"):
        checkpoint.verify_proof(wrong_seq, keys)
    with pytest.raises(checkpoint.CheckpointError, match="another key"):
        other = Ed25519Key(ed25519.Ed25519PrivateKey.generate())
        checkpoint.verify_proof(checkpoint.make_proof(LEAVES, 4, LINES[4], _cp(other)), keys)


def test_proof_needs_a_checkpoint_that_covers_the_line(signer: Ed25519Key) -> None:
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.make_proof(LEAVES, 7, LINES[7], _cp(signer, size=7))
