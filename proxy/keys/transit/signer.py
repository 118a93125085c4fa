"""Transit signing mode: the account's secret lives only in Vault Transit, which signs for us.

An account with ``signing = "transit"`` keeps ``api_key`` (and ``passphrase``) in KV as usual,
but its HMAC secret or private key was imported into Transit (bring-your-own-key, see
:mod:`proxy.keys.transit.wrap`) and never reaches the proxy. The signers here subclass the local
key classes of :mod:`proxy.model.signers`, so the pure exchange modules sign through them
unchanged: ``HmacKey.digest`` becomes ``transit/hmac/<key>/sha2-*``, ``Ed25519Key.sign`` and
``RsaKey.sign_pkcs1_sha256`` become ``transit/sign/<key>``. HMAC, Ed25519 and PKCS#1 v1.5 are
deterministic, so Transit's bytes equal local signing's bytes; hex or base64 is still the
exchange module's business.

Every signature is a blocking HTTP call: signers say ``remote = True`` and the pipeline calls
the exchange module's ``sign`` in a thread. Each signer is pinned to one Transit key version
(the KV field ``transit_version``), so a request in flight during a rotation finishes with the
key it started with, exactly like a local key.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from proxy.errors import TransitError, TransitKeyMissing
from proxy.exchanges.base import Credentials, Exchange
from proxy.model.sensitive import Secret
from proxy.model.signers import Ed25519Key, HmacKey, RsaKey

_HMAC_ALGORITHMS = {"sha256": "sha2-256", "sha384": "sha2-384", "sha512": "sha2-512"}




class TransitClient:
    """A minimal, thread-safe Transit client (one urllib3 pool, keep-alive).

    hvac would do, but a bare pool costs less per call, and this sits on the request path.
    ``token`` is asked for on every call, so a re-login elsewhere (AppRole) is picked up.
    """

    def __init__(
        self, addr: str, token: Callable[[], str], *, mount: str = "transit",
        timeout_s: float = 5.0, ca_file: Path | None = None, pool_size: int = 16,
    ) -> None:
        self.addr, self.mount = addr.rstrip("/"), mount
        self._base = f"{self.addr}/v1/{mount}"
        self._token = token
        kwargs: dict[str, Any] = {}
        if ca_file is not None:
            kwargs.update(cert_reqs="CERT_REQUIRED", ca_certs=str(ca_file))
        self._http = urllib3.PoolManager(
            num_pools=2, maxsize=pool_size, retries=False,
            timeout=urllib3.Timeout(total=timeout_s), **kwargs,
        )

    def __repr__(self) -> str:
        return f"TransitClient(addr={self.addr!r}, mount={self.mount!r})"

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One Transit request; the JSON ``data`` of the answer (empty for 204)."""
        what = f"{self.mount}/{path.split('?', maxsplit=1)[0]}"
        try:
            resp = self._http.request(
                method, f"{self._base}/{path}",
                body=json.dumps(body).encode() if body is not None else None,
                headers={"X-Vault-Token": self._token(), "Content-Type": "application/json"},
            )
        except urllib3.exceptions.HTTPError as exc:
            raise TransitError(f"Vault Transit at {self.addr} unreachable ({type(exc).__name__})") from None
        if resp.status == 204:
            return {}
        try:
            answer = json.loads(resp.data or b"{}")
        except ValueError:
            answer = {}
        if resp.status == 403:
            raise TransitError(f"Vault denied {what}; the token's policy must allow it (deploy/vault)")
        if resp.status == 404:
            raise TransitKeyMissing(f"Vault has no {what}: is the Transit engine mounted at "
                                    f"{self.mount}/ and the key imported (keys import-transit)?")
        if resp.status >= 400 or not isinstance(answer, dict):
            errors = answer.get("errors") if isinstance(answer, dict) else None
            reason = str(errors[0])[:200] if isinstance(errors, list) and errors else f"HTTP {resp.status}"
            raise TransitError(f"Vault Transit {what} failed: {reason}")
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    def key_info(self, name: str) -> dict[str, Any]:
        """The key's metadata: type, versions, public keys (never private material)."""
        return self.call("GET", f"keys/{quote(name, safe='')}")

    def hmac(self, name: str, version: int, algorithm: str, message: bytes) -> bytes:
        data = self.call("POST", f"hmac/{quote(name, safe='')}/{algorithm}", {
            "input": base64.b64encode(message).decode(), "key_version": version,
        })
        return _unwrap(data.get("hmac"), version, "hmac")

    def sign(self, name: str, version: int, message: bytes, *, hash_algorithm: str | None = None,
             signature_algorithm: str | None = None) -> bytes:
        path = f"sign/{quote(name, safe='')}" + (f"/{hash_algorithm}" if hash_algorithm else "")
        body: dict[str, Any] = {"input": base64.b64encode(message).decode(), "key_version": version}
        if signature_algorithm:
            body["signature_algorithm"] = signature_algorithm
        return _unwrap(self.call("POST", path, body).get("signature"), version, "signature")


def _unwrap(value: object, version: int, what: str) -> bytes:
    """``vault:vN:<base64>`` -> raw bytes, checking N is the pinned version."""
    if not isinstance(value, str):
        raise TransitError(f"Vault Transit answered without a {what}")
    prefix = f"vault:v{version}:"
    if not value.startswith(prefix):
        raise TransitError(f"Vault Transit answered a {what} of another key version than v{version}")
    try:
        return base64.b64decode(value[len(prefix):], validate=True)
    except ValueError:
        raise TransitError(f"Vault Transit answered a malformed {what}") from None


# ---------------------------------------------------------------- signers


class TransitHmacKey(HmacKey):
    """An HMAC key held by Transit; ``digest`` (and so hexdigest/b64digest) asks Vault."""

    kind = "transit hmac"
    remote = True
    __slots__ = ("_client", "_name", "_version")

    def __init__(self, client: TransitClient, name: str, version: int) -> None:  # no super(): no secret
        self._client, self._name, self._version = client, name, version

    def digest(self, message: bytes, algorithm: str = "sha256") -> bytes:
        transit_algorithm = _HMAC_ALGORITHMS.get(algorithm)
        if transit_algorithm is None:
            raise TransitError(f"Vault Transit has no HMAC with {algorithm}")
        return self._client.hmac(self._name, self._version, transit_algorithm, message)


class TransitEd25519Key(Ed25519Key):
    """An Ed25519 key held by Transit. Ed25519 is deterministic: Vault's signature is ours."""

    kind = "transit ed25519"
    remote = True
    __slots__ = ("_client", "_name", "_public", "_version")

    def __init__(self, client: TransitClient, name: str, version: int,
                 public: ed25519.Ed25519PublicKey) -> None:
        self._client, self._name, self._version, self._public = client, name, version, public

    def sign(self, message: bytes) -> bytes:
        return self._client.sign(self._name, self._version, message)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public


class TransitRsaKey(RsaKey):
    """An RSA key held by Transit, signing RSASSA-PKCS1-v1_5 with SHA-256 (deterministic)."""

    kind = "transit rsa"
    remote = True
    __slots__ = ("_client", "_name", "_public", "_version")

    def __init__(self, client: TransitClient, name: str, version: int,
                 public: rsa.RSAPublicKey) -> None:
        self._client, self._name, self._version, self._public = client, name, version, public

    def sign_pkcs1_sha256(self, message: bytes) -> bytes:
        return self._client.sign(self._name, self._version, message, hash_algorithm="sha2-256",
                                 signature_algorithm="pkcs1v15")

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public


TransitKey = TransitHmacKey | TransitEd25519Key | TransitRsaKey


def signer(client: TransitClient, name: str, version: int | None = None) -> TransitKey:
    """The signer for Transit key ``name`` pinned to ``version`` (default: its latest)."""
    info = client.key_info(name)
    latest = int(info.get("latest_version") or 0)
    version = latest if version is None else version
    if not 1 <= version <= latest:
        raise ValueError(f"transit key {name} has no version {version} (latest is {latest})")
    kind = str(info.get("type"))
    if kind == "hmac":
        return TransitHmacKey(client, name, version)
    public = (info.get("keys") or {}).get(str(version), {})
    public_text = public.get("public_key") if isinstance(public, dict) else None
    if kind == "ed25519" and isinstance(public_text, str):
        return TransitEd25519Key(client, name, version, ed25519.Ed25519PublicKey.from_public_bytes(
            base64.b64decode(public_text)))
    if kind.startswith("rsa-") and isinstance(public_text, str):
        loaded = serialization.load_pem_public_key(public_text.encode())
        if isinstance(loaded, rsa.RSAPublicKey):
            return TransitRsaKey(client, name, version, loaded)
    raise ValueError(f"transit key {name} is of type {kind}; the proxy signs with hmac, ed25519 "
                     "or rsa-* Transit keys")


# ---------------------------------------------------------------- credentials


@functools.cache
def _placeholder(kind: str) -> Secret:
    """A stand-in ``api_secret`` of the right kind, so the exchange module validates the rest of
    the fields (api_key format, passphrase) and the key kind exactly as for a local key. It is
    thrown away: the signer that replaces it is the Transit one."""
    if kind == "hmac":
        return Secret(base64.b64encode(bytes(64)).decode())  # also valid base64 (some exchanges decode it)
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey = (
        ed25519.Ed25519PrivateKey.generate() if kind == "ed25519"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Secret(pem.decode())


def load_credentials(
    exchange: Exchange, fields: Mapping[str, Secret], kv_version: int, client: TransitClient,
    key_name: str,
) -> Credentials:
    """Credentials of a transit account: api_key (and passphrase) from KV, the signer from
    Transit. ValueError (no secret text) when the KV fields or the key do not fit the exchange."""
    if "api_secret" in fields:
        raise ValueError(
            "api_secret is in the KV secret of a transit account; it must live only in Transit: "
            "run `python -m proxy keys import-transit`, which writes a version without it"
        )
    pinned_text = fields.get("transit_version")
    pinned: int | None = None
    if pinned_text is not None:
        if not pinned_text.reveal().isdigit():
            raise ValueError("transit_version: must be a whole number")
        pinned = int(pinned_text.reveal())
    key = signer(client, key_name, pinned)
    kind = "rsa" if isinstance(key, TransitRsaKey) else key.kind.removeprefix("transit ")
    rest = {k: v for k, v in fields.items() if k != "transit_version"}
    try:
        creds = exchange.load_credentials({**rest, "api_secret": _placeholder(kind)}, kv_version)
    except ValueError as exc:
        if "api_secret" in str(exc):
            raise ValueError(f"{exchange.name} does not sign with {kind} keys "
                             f"(transit key {key_name})") from None
        raise
    if not isinstance(key, type(creds.key)):
        raise ValueError(f"{exchange.name} does not sign with {kind} keys (transit key {key_name})")
    return Credentials(api_key=creds.api_key, key=key, passphrase=creds.passphrase, version=kv_version)
