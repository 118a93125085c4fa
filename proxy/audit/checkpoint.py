"""Signed checkpoints and inclusion proofs: the public-key half of the audit trail. Pure.

A checkpoint is a writer's statement "the first ``size`` lines of my chain in trail ``trail``
have Merkle root ``root`` (RFC 9162), at ``ts``", signed with Ed25519. Whoever holds only the
public key can check it, and nobody without the private key (which stays in Vault Transit or
in a KV path only serving proxies read) can make one. So an auditor who can verify can no
longer forge, unlike with the HMAC chain whose key both checks and writes.

The signed message is a fixed domain line followed by the canonical JSON of the checkpoint
without its signature; ``key_id`` (the first 16 hex digits of SHA-256 of the raw public key)
says which key signed, so a trail signed across a key rotation still verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.audit import merkle
from proxy.errors import CheckpointError, ProofError

DOMAIN = b"signing-proxy audit checkpoint v1\n"
PROOF_VERSION = 1
_FIELDS = frozenset({"trail", "writer", "size", "root", "ts", "key_id", "sig"})


class CheckpointSigner(Protocol):
    """An Ed25519 signer: a local key, or a Vault Transit key that never leaves Vault."""

    def sign(self, message: bytes) -> bytes: ...

    def public_key(self) -> ed25519.Ed25519PublicKey: ...


def raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: ed25519.Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def public_keys_from_pem(text: str | bytes) -> dict[str, ed25519.Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM bundle, by key id (several after a key rotation)."""
    data = text.encode() if isinstance(text, str) else text
    keys: dict[str, ed25519.Ed25519PublicKey] = {}
    marker = b"-----END PUBLIC KEY-----"
    for block in data.split(marker)[:-1]:
        try:
            key = serialization.load_pem_public_key(block.strip() + b"\n" + marker + b"\n")
        except ValueError:
            raise CheckpointError("the public key file holds a block that is not a PEM public key") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise CheckpointError("checkpoint keys are Ed25519; the PEM holds another key type")
        keys[key_id(key)] = key
    if not keys:
        raise CheckpointError("no PEM public key found")
    return keys


def public_pem(key: ed25519.Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class Checkpoint:
    """One signed tree head of one writer's chain."""

    trail: str
    writer: str
    size: int
    root: bytes
    ts: str
    key_id: str
    sig: bytes = b""

    def unsigned(self) -> dict[str, Any]:
        return {"trail": self.trail, "writer": self.writer, "size": self.size,
                "root": self.root.hex(), "ts": self.ts, "key_id": self.key_id}

    def message(self) -> bytes:
        """The exact bytes that are signed."""
        return DOMAIN + orjson.dumps(self.unsigned(), option=orjson.OPT_SORT_KEYS)

    def as_json(self) -> dict[str, Any]:
        return {**self.unsigned(), "sig": base64.b64encode(self.sig).decode()}

    def line(self) -> bytes:
        """One JSON line for a checkpoint file (with newline)."""
        return orjson.dumps(self.as_json(), option=orjson.OPT_SORT_KEYS) + b"\n"


def sign(signer: CheckpointSigner, *, trail: str, writer: str, size: int, root: bytes,
         ts: str) -> Checkpoint:
    unsigned = Checkpoint(trail, writer, size, root, ts, key_id(signer.public_key()))
    return Checkpoint(trail, writer, size, root, ts, unsigned.key_id, signer.sign(unsigned.message()))


def parse(obj: object) -> Checkpoint:
    """A checkpoint from its JSON object; CheckpointError if malformed (signature unchecked)."""
    if not isinstance(obj, Mapping) or set(obj) != _FIELDS:
        raise CheckpointError("not a checkpoint (wrong fields)")
    trail, writer, size, root, ts, kid, sig = (
        obj["trail"], obj["writer"], obj["size"], obj["root"], obj["ts"], obj["key_id"], obj["sig"])
    if not (isinstance(trail, str) and isinstance(writer, str) and isinstance(ts, str)
            and isinstance(kid, str) and isinstance(root, str) and isinstance(sig, str)
            and isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        raise CheckpointError("not a checkpoint (wrong field types)")
    try:
        root_bytes = bytes.fromhex(root)
        sig_bytes = base64.b64decode(sig, validate=True)
    except (ValueError, binascii.Error):
        raise CheckpointError("checkpoint root or signature is not hex / base64") from None
    if len(root_bytes) != merkle.HASH_SIZE:
        raise CheckpointError("checkpoint root is not 32 bytes")
    return Checkpoint(trail, writer, size, root_bytes, ts, kid, sig_bytes)


def parse_line(line: bytes) -> Checkpoint:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise CheckpointError("checkpoint line is not JSON") from None
    return parse(obj)


def check_signature(cp: Checkpoint, keys: Mapping[str, ed25519.Ed25519PublicKey]) -> str | None:
    """None if ``cp`` is signed by one of ``keys``, else why not (the reason names no secret)."""
    key = keys.get(cp.key_id)
    if key is None:
        return (f"checkpoint signed by another key (key id {cp.key_id}; trusted: "
                f"{', '.join(sorted(keys)) or 'none'})")
    try:
        key.verify(cp.sig, cp.message())
    except InvalidSignature:
        return "checkpoint signature does not verify (forged or edited)"
    return None


# ---------------------------------------------------------------- inclusion proofs


@dataclass(frozen=True)
class Proof:
    """One record's line, its place in its writer's chain, and the path to a signed root."""

    record: bytes
    index: int
    path: tuple[bytes, ...]
    checkpoint: Checkpoint

    def as_json(self) -> dict[str, Any]:
        return {"v": PROOF_VERSION, "record": self.record.decode(), "index": self.index,
                "path": [h.hex() for h in self.path], "checkpoint": self.checkpoint.as_json()}


def make_proof(leaf_hashes: Sequence[bytes], index: int, record: bytes, cp: Checkpoint, *,
               start: int = 0, frontier: Sequence[bytes] = ()) -> Proof:
    """The proof of line ``index`` (``record``) against ``cp``, from the chain's leaf hashes
    (from line ``start`` on, with the tree's ``frontier`` there when older lines were pruned)."""
    if cp.size > start + len(leaf_hashes) or not start <= index < cp.size:
        raise CheckpointError(f"checkpoint of size {cp.size} does not cover line {index}")
    try:
        path = merkle.inclusion_proof(leaf_hashes[: cp.size - start], index, start=start,
                                      frontier=frontier)
    except ProofError as exc:
        raise CheckpointError(str(exc)) from None
    return Proof(record, index, tuple(path), cp)


def parse_proof(obj: object) -> Proof:
    if not isinstance(obj, Mapping) or obj.get("v") != PROOF_VERSION:
        raise CheckpointError(f"not an audit proof (version {PROOF_VERSION} expected)")
    record, index, path = obj.get("record"), obj.get("index"), obj.get("path")
    if not (isinstance(record, str) and isinstance(index, int) and isinstance(path, list)
            and all(isinstance(h, str) for h in path)):
        raise CheckpointError("malformed audit proof")
    try:
        hashes = tuple(bytes.fromhex(h) for h in path)
    except ValueError:
        raise CheckpointError("malformed audit proof (path is not hex)") from None
    return Proof(record.encode(), index, hashes, parse(obj.get("checkpoint")))


def verify_proof(proof: Proof, keys: Mapping[str, ed25519.Ed25519PublicKey]) -> dict[str, Any]:
    """The record, if ``proof`` shows it is line ``index`` under a checkpoint one of ``keys``
    signed; CheckpointError naming what does not hold otherwise."""
    reason = check_signature(proof.checkpoint, keys)
    if reason is not None:
        raise CheckpointError(reason)
    try:
        record = orjson.loads(proof.record)
    except orjson.JSONDecodeError:
        raise CheckpointError("the proved record is not JSON") from None
    if not isinstance(record, dict) or record.get("_seq") != proof.index:
        raise CheckpointError("the record's _seq is not the proved index")
    try:
        root = merkle.root_from_inclusion(
            proof.index, proof.checkpoint.size, merkle.leaf_hash(proof.record), proof.path)
    except ProofError as exc:
        raise CheckpointError(f"inclusion proof does not fit: {exc}") from None
    if root != proof.checkpoint.root:
        raise CheckpointError("inclusion proof does not lead to the signed root: the record "
                              "or the proof was altered")
    return record


def latest(checkpoints: Iterable[Checkpoint]) -> Checkpoint | None:
    best: Checkpoint | None = None
    for cp in checkpoints:
        if best is None or cp.size > best.size:
            best = cp
    return best


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointSigner",
    "Proof",
    "check_signature",
    "key_id",
    "make_proof",
    "parse",
    "parse_line",
    "parse_proof",
    "public_keys_from_pem",
    "public_pem",
    "sign",
    "verify_proof",
]
