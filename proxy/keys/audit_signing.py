"""The audit checkpoint key: where it lives, how ``init`` makes it, how proxies and auditors
get their half.

    {mount}/{proxy_path}/audit-signing   private_key  Ed25519 PEM; serving proxies only (kv mode)
    {transit_mount}/keys/<transit_key>   ed25519, non-exportable; proxies may only sign with it
    {mount}/{proxy_path}/audit-verify    public_key   Ed25519 PEM bundle (every version);
                                                      auditors read this and nothing else

The private half never reaches an auditor, so verifying a trail no longer means being able to
forge one (issue 19). In Transit mode it never reaches the proxy either.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.audit import checkpoint
from proxy.audit.checkpointer import CheckpointPolicy
from proxy.errors import CheckpointError, KeyFormatError, SecretSourceError, TransitKeyMissing
from proxy.keys.audit_witness import VaultWitness
from proxy.keys.transit import signer as transit
from proxy.model.signers import Ed25519Key, load_pem_private_key

if TYPE_CHECKING:  # annotations only: keys/ sits below the configuration layer
    from proxy.config import Config
    from proxy.keys.vault import VaultSecretSource
    from proxy.model.sensitive import Secret

AUDIT_SIGNING = "audit-signing"
AUDIT_VERIFY = "audit-verify"


def transit_client(source: VaultSecretSource, cfg: Config) -> transit.TransitClient | None:
    """A Transit client when checkpoints are signed by Transit, else None."""
    if cfg.checkpoints.signing != "transit":
        return None
    return transit.TransitClient(cfg.vault.addr, source.token, mount=cfg.vault.transit_mount,
                                 timeout_s=cfg.vault.timeout_s, ca_file=cfg.vault.ca_file)


def init_checkpoint_keys(
    source: VaultSecretSource, cfg: Config, client: transit.TransitClient | None,
) -> list[str]:
    """Create the checkpoint key if missing and publish its public key(s); the paths written."""
    mode, vault = cfg.checkpoints.signing, cfg.vault
    if mode == "off":
        return []
    if mode == "kv":
        if source.exists(vault.own(AUDIT_VERIFY)):  # written last: the pair is complete
            return []  # (operators may create audit-signing but never read it back)
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        source.write(vault.own(AUDIT_SIGNING), {"private_key": private})
        source.write(vault.own(AUDIT_VERIFY), {"public_key": checkpoint.public_pem(key.public_key())})
        return [vault.own(AUDIT_SIGNING), vault.own(AUDIT_VERIFY)]
    if client is None:
        raise SecretSourceError("audit.checkpoint_signing = \"transit\" needs Vault Transit")
    name = cfg.checkpoints.transit_key
    written: list[str] = []
    try:
        info = client.key_info(name)
    except TransitKeyMissing:
        client.call("POST", f"keys/{name}", {"type": "ed25519", "exportable": False,
                                             "allow_plaintext_backup": False})
        info = client.key_info(name)
        written.append(f"{client.mount}/keys/{name}")
    bundle = "".join(checkpoint.public_pem(k) for k in transit_public_keys(info, name).values())
    current = _published(source, cfg)
    if current != bundle:
        source.write(vault.own(AUDIT_VERIFY), {"public_key": bundle})
        written.append(vault.own(AUDIT_VERIFY))
    return written


def transit_public_keys(info: Mapping[str, object], name: str) -> dict[str, ed25519.Ed25519PublicKey]:
    """Every version's public key of a Transit ed25519 key, by key id."""
    if info.get("type") != "ed25519":
        raise SecretSourceError(
            f"Transit key {name} is of type {info.get('type')}; checkpoints need ed25519")
    if info.get("exportable") is True:
        raise SecretSourceError(f"Transit key {name} is exportable; the checkpoint key must not be")
    keys: dict[str, ed25519.Ed25519PublicKey] = {}
    versions = info.get("keys")
    for entry in (versions.values() if isinstance(versions, dict) else ()):
        text = entry.get("public_key") if isinstance(entry, dict) else None
        if isinstance(text, str):
            public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text))
            keys[checkpoint.key_id(public)] = public
    if not keys:
        raise SecretSourceError(f"Transit key {name} shows no public key")
    return keys


def _published(source: VaultSecretSource, cfg: Config) -> str | None:
    if not source.exists(cfg.vault.own(AUDIT_VERIFY)):
        return None
    value = source.read(cfg.vault.own(AUDIT_VERIFY)).fields.get("public_key")
    return value.reveal() if value is not None else None


def load_signer(
    source: VaultSecretSource, cfg: Config, client: transit.TransitClient | None,
) -> checkpoint.CheckpointSigner | None:
    """The serving proxy's checkpoint signer (None when checkpoints are off)."""
    mode = cfg.checkpoints.signing
    if mode == "off":
        return None
    if mode == "transit":
        if client is None:
            raise SecretSourceError("audit.checkpoint_signing = \"transit\" needs Vault Transit")
        remote = transit.signer(client, cfg.checkpoints.transit_key)
        if not isinstance(remote, transit.TransitEd25519Key):
            raise SecretSourceError(f"Transit key {cfg.checkpoints.transit_key} is not ed25519")
        transit_public_keys(client.key_info(cfg.checkpoints.transit_key), cfg.checkpoints.transit_key)
        return remote
    path = cfg.vault.own(AUDIT_SIGNING)
    private = source.read(path).fields.get("private_key")
    if private is None:
        raise SecretSourceError(f"{path} has no private_key; run `python -m proxy init`")
    try:
        key = load_pem_private_key(private)
    except KeyFormatError:
        raise SecretSourceError(f"{path}: private_key is not a PEM key") from None
    if not isinstance(key, Ed25519Key):
        raise SecretSourceError(f"{path}: the checkpoint key must be Ed25519")
    return key


def checkpoint_policy(
    source: VaultSecretSource, cfg: Config, client: transit.TransitClient | None,
) -> tuple[CheckpointPolicy | None, VaultWitness | None]:
    """A serving proxy's checkpoint policy (signer, schedule, witnesses), and its Vault
    witness thread when ``audit.witness_vault`` is on; (None, None) with checkpoints off."""
    signer = load_signer(source, cfg, client)
    if signer is None:
        return None, None
    ck = cfg.checkpoints
    vault = VaultWitness(source, cfg.vault) if ck.witness_vault else None
    return CheckpointPolicy(signer, every_records=ck.every_records, every_s=ck.every_s,
                            witness_dir=ck.witness_dir,
                            publish=vault.offer if vault else None), vault


def read_public_keys(source: VaultSecretSource, cfg: Config) -> dict[str, ed25519.Ed25519PublicKey]:
    """The published checkpoint public keys (what an auditor's policy lets it read)."""
    path = cfg.vault.own(AUDIT_VERIFY)
    value: Secret | None = source.read(path).fields.get("public_key")
    if value is None:
        raise SecretSourceError(f"{path} has no public_key; run `python -m proxy init`")
    try:
        return checkpoint.public_keys_from_pem(value.reveal())
    except CheckpointError as exc:
        raise SecretSourceError(f"{cfg.vault.own(AUDIT_VERIFY)}: {exc}") from None
