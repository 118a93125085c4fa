"""Coinbase CDP JWTs as the exchange checks them, for REST (``uri`` names the request) and for
the WebSocket (no ``uri``): signature by the key named in ``kid``, ``sub``, ``iss``, a lifetime
of at most two minutes that includes now, and a nonce never seen before."""

from __future__ import annotations

import base64
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

MAX_LIFETIME = 120
_ISSUERS = frozenset({"cdp", "coinbase-cloud"})


def public_key_of(secret: str) -> tuple[str, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey]:
    if "PRIVATE KEY-----" in secret:
        private = serialization.load_pem_private_key(secret.encode(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ValueError("a Coinbase PEM key is EC P-256")
        return "ES256", private.public_key()
    raw = base64.b64decode(secret, validate=True)
    return "EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32]).public_key()


def verify_token(state: Any, token: str, expected_uri: str | None) -> str | None:
    """Why ``token`` is refused, or None when Coinbase would accept it."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return "malformed JWT"
    key = state.keys.get(str(header.get("kid")))
    if key is None:
        return "unknown kid"
    if header.get("alg") != key.algorithm:
        return "alg does not match the key type"
    try:
        claims = jwt.decode(
            token, key.public_key, algorithms=[key.algorithm],
            options={"verify_exp": False, "verify_nbf": False, "verify_aud": False,
                     "verify_iat": False},
        )
    except jwt.PyJWTError:
        return "bad signature"
    if claims.get("sub") != key.name or claims.get("iss") not in _ISSUERS:
        return "sub or iss wrong"
    if expected_uri is None:  # the WebSocket: its tokens name no request
        if "uri" in claims or "uris" in claims:
            return "a WebSocket JWT names no request (no uri)"
    else:
        uris = claims.get("uris") if "uris" in claims else [claims.get("uri")]
        if not isinstance(uris, list) or expected_uri not in uris:
            return "uri does not name this request"
    nbf, exp, now = claims.get("nbf"), claims.get("exp"), state.now()
    if not isinstance(nbf, int) or not isinstance(exp, int):
        return "nbf/exp missing"
    if exp - nbf > MAX_LIFETIME or not nbf <= now < exp:
        return "token not valid now"
    nonce = header.get("nonce")
    if not isinstance(nonce, str) or not nonce:
        return "nonce missing"
    with state.lock:
        for old, until in list(state.seen_nonces.items()):
            if until <= now:
                del state.seen_nonces[old]
        if nonce in state.seen_nonces:
            return "nonce reused"
        state.seen_nonces[nonce] = exp
    return None
