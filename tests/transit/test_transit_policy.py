"""deploy/vault's policies against a real OpenBao Transit: the proxy may only sign and read key
metadata; operators may only import and verify. Nobody can export, back up or reconfigure."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.errors import TransitError
from proxy.exchanges import binance
from proxy.keys.transit.signer import TransitClient, signer
from proxy.keys.transit.wrap import import_key
from proxy.model.sensitive import Secret
from proxy.model.signers import AsymmetricKey, HmacKey
from proxy_devkit.dev_vault import OpenBao

POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "vault"
HMAC_SECRET = "policy-test-secret-" + "x" * 40


def _client(bao: OpenBao, policy: str) -> TransitClient:
    root = bao.client()
    root.sys.create_or_update_acl_policy(policy, (POLICIES / f"{policy}.hcl").read_text())
    token = root.auth.token.create(policies=[policy], no_default_policy=True, ttl="10m")["auth"]["client_token"]
    return TransitClient(bao.addr, lambda: token)


def _denied(call: Callable[[], object]) -> None:
    with pytest.raises(TransitError, match="denied"):
        call()


def _ed25519_key() -> HmacKey | AsymmetricKey:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return binance.EXCHANGE.load_credentials({"api_key": Secret("k"), "api_secret": Secret(pem.decode())}, 1).key


def test_transit_policies_operator_imports_proxy_signs_nobody_exports(bao: OpenBao) -> None:
    operator, proxy = _client(bao, "operator-policy"), _client(bao, "proxy-policy")
    hmac_key = binance.EXCHANGE.load_credentials(
        {"api_key": Secret("k"), "api_secret": Secret(HMAC_SECRET)}, 1).key
    name, ed_name = f"pol-{uuid.uuid4().hex[:8]}", f"pol-ed-{uuid.uuid4().hex[:8]}"

    # The operator imports (a key, then a new version) and reads metadata...
    assert import_key(operator, name, hmac_key).version == 1
    assert import_key(operator, name, hmac_key).version == 2
    import_key(operator, ed_name, _ed25519_key())
    # ...but cannot sign with the keys, export, back up or reconfigure them.
    _denied(lambda: signer(operator, name).hexdigest(b"m"))  # type: ignore[union-attr]
    _denied(lambda: signer(operator, ed_name).sign(b"m"))  # type: ignore[union-attr]
    _denied(lambda: operator.call("GET", f"export/hmac-key/{name}"))
    _denied(lambda: operator.call("GET", f"backup/{name}"))
    _denied(lambda: operator.call("POST", f"keys/{name}/config", {"exportable": True}))
    _denied(lambda: operator.call("POST", f"keys/{name}/rotate"))

    # The proxy signs and reads metadata...
    assert len(signer(proxy, name, 2).digest(b"m")) == 32  # type: ignore[union-attr]
    assert len(signer(proxy, ed_name).sign(b"m")) == 64  # type: ignore[union-attr]
    # ...and nothing else.
    _denied(lambda: import_key(proxy, name, hmac_key))
    _denied(lambda: proxy.call("GET", "wrapping_key"))
    _denied(lambda: proxy.call("GET", f"export/hmac-key/{name}"))
    _denied(lambda: proxy.call("GET", f"export/signing-key/{ed_name}"))
    _denied(lambda: proxy.call("GET", f"backup/{name}"))
    _denied(lambda: proxy.call("POST", f"keys/{name}/config", {"exportable": True}))
    _denied(lambda: proxy.call("POST", f"keys/{name}/rotate"))
    _denied(lambda: proxy.call("POST", f"keys/{name}/import_version", {"ciphertext": "AA=="}))
    _denied(lambda: proxy.call("LIST", "keys"))
    _denied(lambda: proxy.call("POST", f"encrypt/{name}", {"plaintext": "AA=="}))
    _denied(lambda: proxy.call("POST", "random/32", {}))
