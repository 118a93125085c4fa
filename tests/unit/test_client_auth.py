"""Bot tokens: pinned EdDSA, required claims, expiry, revocation, one answer for every failure."""

from __future__ import annotations

import pytest

from proxy.errors import Unauthenticated
from proxy.keys.proxy_keys import new_signing_key
from proxy.pipeline import auth as client_auth

PRIVATE, PUBLIC = new_signing_key()
NOW = 1_800_000_000


def verifier(**kw: object) -> client_auth.TokenVerifier:
    return client_auth.TokenVerifier(PUBLIC, issuer="iss", audience="aud", **kw)  # type: ignore[arg-type]


def token(client: str = "bot", now: int = NOW, ttl: int = 600, private: str = PRIVATE) -> str:
    return client_auth.issue(private, client=client, now=now, ttl_s=ttl, issuer="iss", audience="aud")


def test_client_auth_accepts_a_good_token() -> None:
    assert verifier().client_for([f"Bearer {token()}"], NOW + 1) == "bot"
    assert verifier().client_for([f"bearer {token()}"], NOW + 1) == "bot"


@pytest.mark.parametrize(
    "headers",
    [[], ["Basic abc"], ["Bearer"], ["Bearer a.b.c"], [f"Bearer {token()}", f"Bearer {token()}"],
     [f"Bearer {token(private=new_signing_key()[0])}"], [f"Token {token()}"]],
    ids=["missing", "basic", "empty", "malformed", "two-headers", "other-key", "wrong-scheme"],
)
def test_client_auth_refuses_bad_headers(headers: list[str]) -> None:
    with pytest.raises(Unauthenticated) as err:
        verifier().client_for(headers, NOW + 1)
    assert err.value.message == client_auth.UNAUTHENTICATED


def test_client_auth_refuses_expired_even_when_cached() -> None:
    v, t = verifier(), token(ttl=10)
    assert v.client_for([f"Bearer {t}"], NOW + 5) == "bot"
    with pytest.raises(Unauthenticated):
        v.client_for([f"Bearer {t}"], NOW + 10)


def test_client_auth_revocation_applies_to_cached_tokens() -> None:
    v, t = verifier(), token()
    assert v.client_for([f"Bearer {t}"], NOW + 1) == "bot"
    v.set_revocations({"bot": NOW + 1})
    with pytest.raises(Unauthenticated):
        v.client_for([f"Bearer {t}"], NOW + 2)
    assert v.client_for([f"Bearer {token(now=NOW + 2)}"], NOW + 3) == "bot"


def test_client_auth_wrong_audience_refused() -> None:
    other = client_auth.issue(PRIVATE, client="bot", now=NOW, ttl_s=60, issuer="iss", audience="else")
    with pytest.raises(Unauthenticated):
        verifier().client_for([f"Bearer {other}"], NOW + 1)


def refused(v: client_auth.TokenVerifier, tok: str, now: int = NOW + 1) -> bool:
    try:
        v.client_for([f"Bearer {tok}"], now)
    except Unauthenticated:
        return True
    return False


def test_client_auth_key_rotation_without_overlap_refuses_the_old_key_even_cached() -> None:
    v = verifier()
    old = token()
    assert not refused(v, old)  # verified and cached
    new_private, new_public = new_signing_key()
    v.set_keys(new_public)
    assert refused(v, old)
    assert not refused(v, token(private=new_private))


def test_client_auth_key_rotation_overlap_keeps_the_old_key_until_it_ends() -> None:
    v = verifier()
    old = token()
    assert not refused(v, old)
    new_private, new_public = new_signing_key()
    v.set_keys(new_public, PUBLIC, NOW + 60)
    assert not refused(v, old, NOW + 59) and not refused(v, token(private=new_private), NOW + 59)
    assert refused(v, old, NOW + 60)  # the overlap has ended (cached or not)
    assert not refused(v, token(private=new_private), NOW + 60)


def test_client_auth_a_token_verified_during_a_rotation_is_checked_again() -> None:
    """A verification that raced a rotation is cached under the old keys' generation, so the
    next use checks it against the keys in force."""
    v = verifier()
    old = token()
    keys_before = v._keys
    verified = v._verify(old, keys_before, NOW + 1)
    v.set_keys(new_signing_key()[1])
    v._cache[old] = verified  # what a request in flight during set_keys would have stored
    assert refused(v, old)
