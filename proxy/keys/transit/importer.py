"""``keys import-transit``: put a transit account's key into Vault Transit, the rest into KV.

The operator pipes the key as issued (the ``keys rotate`` JSON: api_key, api_secret, and
passphrase where the exchange issues one). The exchange module loads it exactly as it would for local
signing, so Transit receives the very bytes local signing would use; the material is wrapped
for Transit's wrapping key and imported as a new key or a new version; Vault then proves it
holds the same key (an HMAC verified by Transit, or the public key compared) before KV gets a
new version with api_key, passphrase and ``transit_version`` but no api_secret. Running proxies
notice that KV version, as for any rotation, and sign with the new Transit version.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from proxy import exchanges
from proxy.errors import KeyFormatError, KeyInputError, SecretSourceError, TransitError
from proxy.keys.transit.signer import TransitClient, signer
from proxy.keys.transit.wrap import import_key, transit_material
from proxy.model.sensitive import Secret
from proxy.model.signers import AsymmetricKey, HmacKey

if TYPE_CHECKING:  # types only: this edge does not import the wiring layer
    from proxy.config import AccountConfig, VaultConfig
    from proxy.keys.vault import VaultSecretSource

_FIELDS = {"api_key", "api_secret", "passphrase"}
_PROBE = b"signing-proxy transit import check"



@dataclass(frozen=True)
class Result:
    transit_key: str
    transit_version: int
    kv_version: int
    created: bool


def client_for(vault: VaultConfig, source: VaultSecretSource) -> TransitClient:
    return TransitClient(vault.addr, source.token, mount=vault.transit_mount,
                         timeout_s=vault.timeout_s, ca_file=vault.ca_file)


def parse_key_json(text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not {"api_key", "api_secret"} <= set(data) \
            or set(data) - _FIELDS or not all(isinstance(v, str) for v in data.values()):
        raise KeyInputError("stdin must be a JSON object of strings with api_key, api_secret "
                            "(and passphrase where the exchange issues one), nothing else")
    return data


def import_account_key(
    vault: VaultConfig, account: AccountConfig, source: VaultSecretSource, stdin_text: str
) -> Result:
    """Import the key on stdin for ``account`` (signing = "transit"); see the module doc."""
    fields = parse_key_json(stdin_text)
    name = account.transit_key or account.name
    try:  # refuse material the exchange module cannot load before Vault sees it
        local = exchanges.get(account.exchange).load_credentials(
            {k: Secret(v) for k, v in fields.items()}, 0)
        transit_material(local.key)
    except (ValueError, KeyFormatError) as exc:
        raise KeyInputError(f"the new key is not usable for {account.exchange}: {exc}") from None
    client = client_for(vault, source)
    imported = import_key(client, name, local.key)
    _prove_same_key(client, name, imported.version, local.key)
    kv = {k: v for k, v in fields.items() if k != "api_secret"}
    kv["transit_version"] = str(imported.version)
    try:
        kv_version = source.write(account.secret, kv)
    except SecretSourceError as exc:
        raise SecretSourceError(
            f"{exc}; transit key {name} version {imported.version} was imported, but proxies "
            "keep the old key until this KV write succeeds: run the command again") from None
    return Result(name, imported.version, kv_version, imported.created)


def _prove_same_key(client: TransitClient, name: str, version: int, key: HmacKey | AsymmetricKey) -> None:
    """Vault holds the key we meant: Transit verifies our HMAC (no signing right needed), or
    its public key is ours."""
    if isinstance(key, HmacKey):
        mac = base64.b64encode(hmac.new(transit_material(key)[1], _PROBE, hashlib.sha256).digest())
        answer = client.call("POST", f"verify/{name}/sha2-256", {
            "input": base64.b64encode(_PROBE).decode(), "hmac": f"vault:v{version}:{mac.decode()}",
        })
        same = answer.get("valid") is True
    else:
        remote = signer(client, name, version)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        same = not isinstance(remote, HmacKey) and \
            remote.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    if not same:
        raise TransitError(f"transit key {name} version {version} does not match the key given; "
                           "KV was not changed")
