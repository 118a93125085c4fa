"""Bot authentication: ``Proxy-Authorization: Bearer <JWT>``.

Tokens are EdDSA (Ed25519) JWTs with a pinned algorithm and required ``exp``, ``iat``, ``sub``,
``iss``, ``aud`` and ``jti``. The private key lives in Vault and is read only by ``token issue``;
a serving proxy holds just the public key, so it cannot mint tokens. Revocation: every token of
a client issued before a recorded time is refused (``token revoke``). Key rotation (``token
rotate-key``): ``set_keys`` swaps the verify key on a running proxy; the previous key verifies
only until an explicit overlap ends (none by default), and a token verified with a key no longer
in force is checked again, never served from the cache. Every failure is the same 401, whatever
the cause, so a bot learns nothing from it.
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
    generation: int        # of the keys that verified it (a rotation makes the cache entry stale)
    by_previous: bool      # verified by the previous key, valid only during the overlap


@dataclass(frozen=True)
class _Keys:
    current: ed25519.Ed25519PublicKey
    previous: ed25519.Ed25519PublicKey | None
    previous_until: int        # unix time; the previous key verifies only before it
    generation: int


def _public_key(pem: str) -> ed25519.Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("token-verify key is not Ed25519; re-run init")
    return key


class TokenVerifier:
    """Verifies bearer tokens; caches good ones so the signature check is paid once per token."""

    def __init__(
        self, public_pem: str, *, issuer: str, audience: str,
        revoked_before: Mapping[str, int] | None = None,
        previous_pem: str | None = None, previous_until: int = 0,
    ) -> None:
        self._keys = _Keys(_public_key(public_pem), None, 0, 0)
        self.set_keys(public_pem, previous_pem, previous_until)
        self._issuer, self._audience = issuer, audience
        self._revoked_before: Mapping[str, int] = dict(revoked_before or {})
        self._cache: dict[str, _Verified] = {}

    def set_keys(self, public_pem: str, previous_pem: str | None = None, previous_until: int = 0) -> None:
        """Verify with ``public_pem`` from now on, and with ``previous_pem`` only before
        ``previous_until`` (unix time). One assignment: a request sees the old keys or the new."""
        current = _public_key(public_pem)
        previous = _public_key(previous_pem) if previous_pem else None
        self._keys = _Keys(current, previous, previous_until if previous is not None else 0,
                           self._keys.generation + 1)

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
        keys = self._keys
        verified = self._cache.get(token)
        if verified is None or verified.generation != keys.generation:
            verified = self._verify(token, keys, now)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[token] = verified
        if verified.by_previous and now >= keys.previous_until:  # the overlap has ended
            raise Unauthenticated(UNAUTHENTICATED)
        if verified.exp <= now or verified.nbf > now + 60:
            self._cache.pop(token, None)
            raise Unauthenticated(UNAUTHENTICATED)
        revoked = self._revoked_before.get(verified.client)
        if revoked is not None and verified.iat < revoked:
            raise Unauthenticated(UNAUTHENTICATED)
        return verified.client

    def _verify(self, token: str, keys: _Keys, now: int) -> _Verified:
        by_previous = False
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM or set(header) - {"alg", "typ"}:
                raise Unauthenticated(UNAUTHENTICATED)
            try:
                claims = self._decode(token, keys.current)
            except jwt.InvalidSignatureError:
                if keys.previous is None or now >= keys.previous_until:
                    raise
                claims, by_previous = self._decode(token, keys.previous), True
        except jwt.PyJWTError:
            raise Unauthenticated(UNAUTHENTICATED) from None
        sub, iat, exp = claims.get("sub"), claims.get("iat"), claims.get("exp")
        nbf = claims.get("nbf", iat)
        if not (isinstance(sub, str) and isinstance(iat, int) and isinstance(exp, int)
                and isinstance(nbf, int)):
            raise Unauthenticated(UNAUTHENTICATED)
        return _Verified(sub, iat, exp, max(iat, nbf), keys.generation, by_previous)

    def _decode(self, token: str, key: ed25519.Ed25519PublicKey) -> dict[str, object]:
        # Times are checked by client_for against the caller's clock (exp on every use, cached
        # or not); pyjwt checks signature, algorithm, audience, issuer and presence.
        claims: dict[str, object] = jwt.decode(
            token, key, algorithms=[ALGORITHM], audience=self._audience, issuer=self._issuer, leeway=0,
            options={"require": _REQUIRED, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        return claims
