"""Private keys as opaque signers: loaded once, never printed, never pickled.

Exchange modules turn the secret text from Vault into one of these at load time, so PEM
parsing is not on the request path and raw key material is not passed around.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import NoReturn

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from proxy.errors import KeyFormatError
from proxy.model.sensitive import Secret


class _Redacted:
    kind = "key"
    #: True for signers that call out to compute a signature (Vault Transit, proxy/keys/transit/signer.py):
    #: the pipeline runs those off the event loop. Local keys sign in memory.
    remote = False

    def __repr__(self) -> str:
        return f"<{self.kind} key>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("signing keys cannot be pickled")


class HmacKey(_Redacted):
    kind = "hmac"
    __slots__ = ("_secret",)

    def __init__(self, secret: Secret | bytes) -> None:
        self._secret = secret.reveal().encode() if isinstance(secret, Secret) else secret

    def digest(self, message: bytes, algorithm: str = "sha256") -> bytes:
        return hmac.new(self._secret, message, getattr(hashlib, algorithm)).digest()

    def hexdigest(self, message: bytes, algorithm: str = "sha256") -> str:
        return self.digest(message, algorithm).hex()

    def b64digest(self, message: bytes, algorithm: str = "sha256") -> str:
        return base64.b64encode(self.digest(message, algorithm)).decode()


class Ed25519Key(_Redacted):
    kind = "ed25519"
    __slots__ = ("_key",)

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._key.public_key()


class RsaKey(_Redacted):
    kind = "rsa"
    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    def sign_pkcs1_sha256(self, message: bytes) -> bytes:
        return self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()


class EcKey(_Redacted):
    kind = "ecdsa"
    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """For JWT libraries that take a key object (ES256 JWTs)."""
        return self._key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()


AsymmetricKey = Ed25519Key | RsaKey | EcKey


def load_pem_private_key(secret: Secret) -> AsymmetricKey:
    """Load a PEM private key (PKCS#8 or traditional) without ever echoing its text."""
    try:
        key = serialization.load_pem_private_key(secret.reveal().encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFormatError("api_secret is not a readable unencrypted PEM private key") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Ed25519Key(key)
    if isinstance(key, rsa.RSAPrivateKey):
        return RsaKey(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return EcKey(key)
    raise KeyFormatError("api_secret is a PEM key of an unsupported type")


def material_for_import(key: HmacKey | AsymmetricKey) -> tuple[str, bytes]:
    """(Vault Transit key type, raw key material) of a local key, for BYOK import only.

    HMAC keys give the exact bytes the exchange module signs with (a base64 secret decoded
    where the exchange signs with the decoded bytes, else the text as UTF-8); private keys give
    PKCS#8 DER. The caller wraps the bytes for Transit at once and drops them.
    """
    if isinstance(key, HmacKey):
        return "hmac", key._secret
    if isinstance(key, Ed25519Key | RsaKey):
        der = key._key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return ("ed25519" if isinstance(key, Ed25519Key) else f"rsa-{key._key.key_size}"), der
    raise KeyFormatError(f"{key.kind} keys cannot be used in Vault Transit mode")


def looks_like_pem(secret: Secret) -> bool:
    return "PRIVATE KEY-----" in secret.reveal()
