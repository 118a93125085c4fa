"""The proxy's own keys in Vault: where they live and how ``init`` creates them.

    {mount}/{proxy_path}/token-signing   private_key  Ed25519 PEM; read only by `token issue`
    {mount}/{proxy_path}/token-verify    public_key   Ed25519 PEM; read by serving proxies (every
                                                      2 s: ``token rotate-key`` takes effect live)
                                         previous_public_key, previous_until: the key before the
                                                      last rotation and the unix time it stops
                                                      verifying (only with an explicit overlap)
    {mount}/{proxy_path}/audit-chain     key          64 hex chars; serving proxies and auditors
    {mount}/{proxy_path}/revocations     clients      JSON {client: unix time}; tokens issued
                                                      earlier are refused

Splitting signing from verifying lets a serving proxy's Vault policy omit token-signing: a
compromised proxy host can use the keys it holds but cannot mint bot tokens.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.errors import SecretSourceError
from proxy.keys.vault import VaultSecretSource

if TYPE_CHECKING:  # a type only: edges do not import the wiring layer
    from proxy.config import VaultConfig

TOKEN_SIGNING = "token-signing"  # noqa: S105 - a Vault path, not a secret
TOKEN_VERIFY = "token-verify"  # noqa: S105 - a Vault path, not a secret
AUDIT_CHAIN = "audit-chain"
REVOCATIONS = "revocations"

def new_signing_key() -> tuple[str, str]:
    """A fresh Ed25519 key pair as (private PEM, public PEM), for ``init``."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


def init_keys(source: VaultSecretSource, cfg: VaultConfig) -> list[str]:
    """Create whichever of the proxy's keys are missing; returns the paths it wrote."""
    written: list[str] = []
    if not source.exists(cfg.own(TOKEN_SIGNING)) or not source.exists(cfg.own(TOKEN_VERIFY)):
        private, public = new_signing_key()
        source.write(cfg.own(TOKEN_SIGNING), {"private_key": private})
        source.write(cfg.own(TOKEN_VERIFY), {"public_key": public})
        written += [cfg.own(TOKEN_SIGNING), cfg.own(TOKEN_VERIFY)]
    if not source.exists(cfg.own(AUDIT_CHAIN)):
        source.write(cfg.own(AUDIT_CHAIN), {"key": secrets.token_hex(32)})
        written.append(cfg.own(AUDIT_CHAIN))
    if not source.exists(cfg.own(REVOCATIONS)):
        source.write(cfg.own(REVOCATIONS), {"clients": "{}"})
        written.append(cfg.own(REVOCATIONS))
    return written


@dataclass(frozen=True)
class VerifyKeys:
    """What verifies bot tokens now: the current public key, and the previous one until
    ``previous_until`` (unix time) when a rotation asked for an overlap."""

    public_pem: str
    previous_pem: str | None = None
    previous_until: int = 0
    version: int = 0        # KV version of token-verify


def read_verify_keys(source: VaultSecretSource, cfg: VaultConfig) -> VerifyKeys:
    secret = source.read(cfg.own(TOKEN_VERIFY))
    public, previous = secret.fields.get("public_key"), secret.fields.get("previous_public_key")
    until = secret.fields.get("previous_until")
    if public is None:
        raise SecretSourceError(f"{cfg.own(TOKEN_VERIFY)} has no public_key; run `python -m proxy init`")
    try:
        previous_until = int(until.reveal()) if until is not None else 0
    except ValueError:
        raise SecretSourceError(f"{cfg.own(TOKEN_VERIFY)}: previous_until is not a unix time; "
                                "rotate again with `python -m proxy token rotate-key`") from None
    return VerifyKeys(public.reveal(), previous.reveal() if previous is not None else None, previous_until,
                      secret.version)


def rotate_token_keys(source: VaultSecretSource, cfg: VaultConfig, *, overlap_s: int, now: int) -> VerifyKeys:
    """A new token key pair. The verify key is written first (serving proxies pick it up within
    seconds), then the signing key (``token issue`` signs with it from then on). The old key
    keeps verifying only for ``overlap_s`` seconds (0: tokens it signed are refused at once)."""
    old = read_verify_keys(source, cfg)
    private, public = new_signing_key()
    fields = {"public_key": public}
    if overlap_s > 0:
        fields |= {"previous_public_key": old.public_pem, "previous_until": str(now + overlap_s)}
    version = source.write(cfg.own(TOKEN_VERIFY), fields)
    source.write(cfg.own(TOKEN_SIGNING), {"private_key": private})
    until = now + overlap_s if overlap_s > 0 else 0
    return VerifyKeys(public, fields.get("previous_public_key"), until, version)


class SetsKeys(Protocol):
    """What verifies bot tokens (``proxy.pipeline.auth.TokenVerifier``)."""

    def set_keys(self, public_pem: str, previous_pem: str | None = None, previous_until: int = 0) -> None: ...


def follow_verify_keys(
    source: VaultSecretSource, cfg: VaultConfig, verifier: SetsKeys, held: VerifyKeys | None,
) -> VerifyKeys:
    """``token rotate-key`` on a running proxy: a new token-verify version replaces the keys
    ``verifier`` uses (called every refresh round: in force within seconds, no restart)."""
    keys = read_verify_keys(source, cfg)
    if held is None or keys.version != held.version:
        verifier.set_keys(keys.public_pem, keys.previous_pem, keys.previous_until)
        logging.getLogger("proxy.keys").info(
            "token verify key now version %d%s", keys.version,
            f" (the previous key verifies until {keys.previous_until})" if keys.previous_pem else "")
    return keys


def read_revocations(source: VaultSecretSource, cfg: VaultConfig) -> dict[str, int]:
    raw = source.read(cfg.own(REVOCATIONS)).fields.get("clients")
    try:
        data = json.loads(raw.reveal()) if raw else {}
        return {str(k): int(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        raise SecretSourceError(
            f"{cfg.own(REVOCATIONS)}: 'clients' is not a JSON object of client -> unix time; "
            "fix it with `python -m proxy token revoke` or rewrite it as {}"
        ) from None


def revoke_client(source: VaultSecretSource, cfg: VaultConfig, client: str, before: int) -> None:
    current = read_revocations(source, cfg)
    current[client] = before
    source.write(cfg.own(REVOCATIONS), {"clients": json.dumps(current, sort_keys=True)})
