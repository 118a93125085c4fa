"""Bot authentication: ``Proxy-Authorization: Bearer <JWT>``.

Tokens are EdDSA (Ed25519) JWTs with a pinned algorithm and required ``exp``, ``iat``, ``sub``,
``iss``, ``aud`` and ``jti``. The private key lives in Vault and is read only by ``token issue``;
a serving proxy holds just the public key, so it cannot mint tokens. Revocation: every token of
a client issued before a recorded time is refused (``token revoke``). Every failure is the same
401, whatever the cause, so a bot learns nothing from it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.errors import Unauthenticated

ALGORITHM = "EdDSA"
_REQUIRED = ["exp", "iat", "sub", "iss", "aud", "jti"]
_TOKEN = re.compile(r"[A-Za-z0-9_-]{10,2048}\.[A-Za-z0-9_-]{10,2048}\.[A-Za-z0-9_-]{10,512}")
_CACHE_MAX = 4096
UNAUTHENTICATED = "a valid Proxy-Authorization: Bearer token is required"



def issue(
    private_pem: str, *, client: str, now: int, ttl_s: int, issuer: str, audience: str
) -> str:
    """Sign a token for ``client`` valid from ``now`` for ``ttl_s`` seconds."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("token-signing key is not Ed25519; re-run init")
    claims = {
        "sub": client, "iss": issuer, "aud": audience, "iat": now, "nbf": now,
        "exp": now + ttl_s, "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


@dataclass(frozen=True)
class _Verified:
    client: str
    iat: int
    exp: int
    nbf: int


class TokenVerifier:
    """Verifies bearer tokens; caches good ones so the signature check is paid once per token."""

    def __init__(
        self, public_pem: str, *, issuer: str, audience: str,
        revoked_before: Mapping[str, int] | None = None,
    ) -> None:
        key = serialization.load_pem_public_key(public_pem.encode())
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("token-verify key is not Ed25519; re-run init")
        self._key = key
        self._issuer, self._audience = issuer, audience
        self._revoked_before: Mapping[str, int] = dict(revoked_before or {})
        self._cache: dict[str, _Verified] = {}

    def __repr__(self) -> str:
        return f"TokenVerifier(issuer={self._issuer!r}, audience={self._audience!r})"

    def set_revocations(self, revoked_before: Mapping[str, int]) -> None:
        self._revoked_before = dict(revoked_before)

    def client_for(self, header_values: list[str], now: int) -> str:
        """The client named by the single Proxy-Authorization header, or Unauthenticated."""
        if len(header_values) != 1:
            raise Unauthenticated(UNAUTHENTICATED)
        scheme, _, token = header_values[0].partition(" ")
        if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
            raise Unauthenticated(UNAUTHENTICATED)
        verified = self._cache.get(token)
        if verified is None:
            verified = self._verify(token)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[token] = verified
        if verified.exp <= now or verified.nbf > now + 60:
            self._cache.pop(token, None)
            raise Unauthenticated(UNAUTHENTICATED)
        revoked = self._revoked_before.get(verified.client)
        if revoked is not None and verified.iat < revoked:
            raise Unauthenticated(UNAUTHENTICATED)
        return verified.client

    def _verify(self, token: str) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM or set(header) - {"alg", "typ"}:
                raise Unauthenticated(UNAUTHENTICATED)
            # Times are checked by client_for against the caller's clock (exp on every use,
            # cached or not); pyjwt checks signature, algorithm, audience, issuer and presence.
            claims = jwt.decode(
                token, self._key, algorithms=[ALGORITHM], audience=self._audience,
                issuer=self._issuer, leeway=0,
                options={"require": _REQUIRED, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise Unauthenticated(UNAUTHENTICATED) from None
        sub, iat, exp = claims.get("sub"), claims.get("iat"), claims.get("exp")
        nbf = claims.get("nbf", iat)
        if not (isinstance(sub, str) and isinstance(iat, int) and isinstance(exp, int)
                and isinstance(nbf, int)):
            raise Unauthenticated(UNAUTHENTICATED)
        return _Verified(sub, iat, exp, max(iat, nbf))
