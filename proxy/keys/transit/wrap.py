"""Bring-your-own-key into Vault Transit: wrap key material so only Vault can unwrap it.

Transit's import protocol: a fresh AES-256 key wraps the material with AES-KWP (RFC 5649), and
Transit's RSA-4096 wrapping key (``transit/wrapping_key``) wraps that AES key with RSA-OAEP
(SHA-256); the ciphertext is both, concatenated, in base64. The first import creates the key
(``keys/<name>/import``, never exportable, no plaintext backup); later ones add a version
(``keys/<name>/import_version``), which is how a transit account's key rotates.

Transit takes HMAC keys of 32 to 512 bytes. Exchange secrets shorter than 32 bytes are padded
with zero bytes to 32: HMAC pads every key shorter than the hash's block (64 or 128 bytes for
SHA-2) with zeros anyway (RFC 2104, step 1), so the padded key gives identical signatures.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from proxy.errors import KeyFormatError, TransitError, TransitKeyMissing
from proxy.keys.transit.signer import TransitClient
from proxy.model.signers import AsymmetricKey, HmacKey, material_for_import

HMAC_MIN_BYTES, HMAC_MAX_BYTES = 32, 512


@dataclass(frozen=True)
class Imported:
    name: str
    version: int
    type: str
    created: bool


def transit_material(key: HmacKey | AsymmetricKey) -> tuple[str, bytes]:
    """The Transit key type and the bytes to import for a loaded local key."""
    kind, material = material_for_import(key)
    if kind == "hmac":
        if len(material) > HMAC_MAX_BYTES:
            raise KeyFormatError(f"HMAC secrets over {HMAC_MAX_BYTES} bytes cannot go into Transit")
        material = material.ljust(HMAC_MIN_BYTES, b"\0")
    return kind, material


def wrap(material: bytes, wrapping_key_pem: str) -> str:
    """The ``ciphertext`` Transit's import endpoints take."""
    public = serialization.load_pem_public_key(wrapping_key_pem.encode())
    if not isinstance(public, rsa.RSAPublicKey):
        raise TransitError("Transit's wrapping key is not an RSA key")
    ephemeral = os.urandom(32)
    wrapped_key = public.encrypt(ephemeral, padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    return base64.b64encode(wrapped_key + aes_key_wrap_with_padding(ephemeral, material)).decode()


def import_key(client: TransitClient, name: str, key: HmacKey | AsymmetricKey) -> Imported:
    """Import ``key`` as Transit key ``name``: a new key, or a new version of the existing one
    (which must be of the same type). Returns the version now holding it."""
    kind, material = transit_material(key)
    quoted = quote(name, safe="")
    existing: dict[str, object] | None
    try:
        existing = client.key_info(name)
    except TransitKeyMissing:
        existing = None
    if existing and existing.get("type") != kind:
        raise TransitError(
            f"transit key {name} is of type {existing.get('type')}, the new key is {kind}; "
            "use another transit_key name for a different kind of key"
        )
    if existing and (existing.get("exportable") is not False
                     or existing.get("allow_plaintext_backup") is not False):
        raise TransitError(
            f"transit key {name} can be exported or backed up in plaintext; an exchange secret must "
            "never go into such a key: use a new transit_key name (import creates it non-exportable)"
        )
    pem = client.call("GET", "wrapping_key").get("public_key")
    if not isinstance(pem, str):
        raise TransitError("Transit did not give its wrapping key")
    body: dict[str, object] = {"ciphertext": wrap(material, pem), "hash_function": "SHA256"}
    if existing:
        client.call("POST", f"keys/{quoted}/import_version", body)
    else:
        body.update(type=kind, exportable=False, allow_plaintext_backup=False)
        client.call("POST", f"keys/{quoted}/import", body)
    del material
    version = int(client.key_info(name).get("latest_version") or 0)
    return Imported(name, version, kind, created=not existing)
