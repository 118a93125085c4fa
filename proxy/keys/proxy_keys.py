"""The proxy's own keys in Vault: where they live and how ``init`` creates them.

    {mount}/{proxy_path}/token-signing   private_key  Ed25519 PEM; read only by `token issue`
    {mount}/{proxy_path}/token-verify    public_key   Ed25519 PEM; read by serving proxies
    {mount}/{proxy_path}/audit-chain     key          64 hex chars; serving proxies and auditors
    {mount}/{proxy_path}/revocations     clients      JSON {client: unix time}; tokens issued
                                                      earlier are refused

Splitting signing from verifying lets a serving proxy's Vault policy omit token-signing: a
compromised proxy host can use the keys it holds but cannot mint bot tokens.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING

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
