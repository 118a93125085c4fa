"""Transit signing against a real OpenBao: the published vectors, and byte-for-byte equality
with local signing for every exchange and key type Transit can hold."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from proxy import exchanges
from proxy.errors import TransitError
from proxy.exchanges import binance
from proxy.exchanges.base import Credentials, Exchange
from proxy.keys.transit.signer import TransitClient, TransitHmacKey, load_credentials, signer
from proxy.keys.transit.wrap import import_key
from proxy.model.request import Inbound, Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey

FORM, JSON = "application/x-www-form-urlencoded", "application/json"

# SPECS.md "Test vectors" #1, #2 (Binance), #3 (Kraken), #4 (Deribit): the exchanges' own docs.
BINANCE_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
BINANCE_VECTORS = [
    ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
     "&timestamp=1499827319559", "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"),
    ("symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT"
     "&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
     "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"),
]
KRAKEN_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
KRAKEN_SIGN = (
    "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
)
DERIBIT_ID, DERIBIT_SECRET = "AMANDA", "AMANDASECRECT"  # 13 bytes: Transit needs 32, see padding
DERIBIT_SIG = "56590594f97921b09b18f166befe0d1319b198bbcdad7ca73382de2f88fe9aa1"


def _pem(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _both(transit: TransitClient, exchange: Exchange, fields: dict[str, str]) -> tuple[Credentials, Credentials]:
    """(local credentials, transit credentials) for the same key material: the secret is
    imported into a new Transit key and the KV fields lose api_secret, as keys import-transit does."""
    local = exchange.load_credentials({k: Secret(v) for k, v in fields.items()}, 3)
    name = f"{exchange.name}-{uuid.uuid4().hex[:10]}"
    imported = import_key(transit, name, local.key)
    kv = {k: Secret(v) for k, v in fields.items() if k != "api_secret"}
    kv["transit_version"] = Secret(str(imported.version))
    return local, load_credentials(exchange, kv, 3, transit, name)


@pytest.mark.parametrize(("payload", "expected"), BINANCE_VECTORS)
def test_transit_binance_published_hmac_vectors(transit: TransitClient, payload: str, expected: str) -> None:
    _, creds = _both(transit, binance.EXCHANGE, {"api_key": "k", "api_secret": BINANCE_SECRET})
    assert creds.key.remote
    assert binance.signature_for(creds, payload.encode()) == expected


def test_transit_kraken_published_vector_end_to_end(transit: TransitClient) -> None:
    kraken = exchanges.get("kraken")
    _, creds = _both(transit, kraken, {"api_key": "k", "api_secret": KRAKEN_SECRET})
    body = "ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
    prepared = kraken.prepare(Inbound("POST", "/0/private/AddOrder", b"", (("content-type", FORM),),
                                      body.encode()))
    out = kraken.sign(prepared, creds, Stamp(1, 1616492376594), "api.kraken.com")
    assert dict(out.headers)["API-Sign"] == KRAKEN_SIGN


def test_transit_deribit_published_vector_with_a_short_secret(transit: TransitClient) -> None:
    deribit = exchanges.get("deribit")
    _, creds = _both(transit, deribit, {"api_key": DERIBIT_ID, "api_secret": DERIBIT_SECRET})
    assert isinstance(creds.key, TransitHmacKey)
    assert creds.key.hexdigest(b"1576074319000\n1iqt2wls\n") == DERIBIT_SIG


_ED = _pem(ed25519.Ed25519PrivateKey.generate())
_RSA = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
_HMAC = "Zq3tV8w1xK0pL5nR7sY2bC4dF6gH9jM1aQ3eW5rT7yU9iO0p"

#: One signed request per exchange and key type: (exchange, secret, extra fields, inbound).
CASES = [
    ("binance", _HMAC, {}, Inbound("POST", "/api/v3/order", b"", (("content-type", FORM),),
                                   b"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=50000")),
    ("binance", _ED, {}, Inbound("GET", "/api/v3/account", b"omitZeroBalances=true", (), b"")),
    ("binance", _RSA, {}, Inbound("GET", "/api/v3/account", b"", (), b"")),
    ("bybit", _HMAC, {}, Inbound("GET", "/v5/account/wallet-balance", b"accountType=UNIFIED", (), b"")),
    ("bybit", _RSA, {}, Inbound("GET", "/v5/account/wallet-balance", b"accountType=UNIFIED", (), b"")),
    ("okx", _HMAC, {"passphrase": "pass-1"}, Inbound("GET", "/api/v5/account/balance", b"ccy=BTC", (), b"")),
    ("bitget", _HMAC, {"passphrase": "pass-2"}, Inbound("GET", "/api/v2/spot/account/assets", b"", (), b"")),
    ("bitget", _RSA, {"passphrase": "pass-2"}, Inbound("GET", "/api/v2/spot/account/assets", b"", (), b"")),
    ("bitstamp", _HMAC, {}, Inbound("POST", "/api/v2/account_balances/", b"", (), b"")),
    ("bitfinex", _HMAC, {}, Inbound("POST", "/v2/auth/r/wallets", b"", (("content-type", JSON),), b"{}")),
    ("kraken", base64.b64encode(b"\x01k" * 32).decode(), {},
     Inbound("POST", "/0/private/Balance", b"", (), b"")),
    ("deribit", _HMAC, {}, Inbound("GET", "/api/v2/private/get_account_summary", b"currency=BTC", (), b"")),
]


@pytest.mark.parametrize(("name", "secret", "extra", "inbound"), CASES,
                         ids=[f"{c[0]}-{'pem' if 'PRIVATE' in c[1] else 'hmac'}-{i}" for i, c in enumerate(CASES)])
def test_transit_signed_request_equals_local_byte_for_byte(
    transit: TransitClient, name: str, secret: str, extra: dict[str, str], inbound: Inbound
) -> None:
    exchange = exchanges.get(name)
    local, remote = _both(transit, exchange, {"api_key": "key-1", "api_secret": secret, **extra})
    assert remote.key.remote and not local.key.remote
    prepared = exchange.prepare(inbound)
    stamp = Stamp(1_700_000_000_123, 1_700_000_000_123_456, "9b2f0c4e-1d3a-4f5b-8c6d-7e8f9a0b1c2d")
    assert exchange.sign(prepared, remote, stamp, "exchange.test") == \
        exchange.sign(prepared, local, stamp, "exchange.test")


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_transit_hmac_matches_the_hmac_module(transit: TransitClient, algorithm: str) -> None:
    _, creds = _both(transit, binance.EXCHANGE, {"api_key": "k", "api_secret": _HMAC})
    message = b"any message \x00\xff"
    assert isinstance(creds.key, HmacKey)
    assert creds.key.digest(message, algorithm) == \
        hmac.new(_HMAC.encode(), message, getattr(hashlib, algorithm)).digest()


def test_transit_rotation_pins_versions(transit: TransitClient) -> None:
    """A new version (import_version) signs with the new secret; a signer pinned to the old
    version (a request in flight) still signs with the old one."""
    old, new = "old-secret-" + "a" * 30, "new-secret-" + "b" * 30
    name = f"rot-{uuid.uuid4().hex[:10]}"
    first = import_key(transit, name, binance.EXCHANGE.load_credentials(
        {"api_key": Secret("k"), "api_secret": Secret(old)}, 1).key)
    second = import_key(transit, name, binance.EXCHANGE.load_credentials(
        {"api_key": Secret("k"), "api_secret": Secret(new)}, 2).key)
    assert (first.version, first.created, second.version, second.created) == (1, True, 2, False)
    msg = b"symbol=BTCUSDT"
    v1, v2, latest = signer(transit, name, 1), signer(transit, name, 2), signer(transit, name)
    assert isinstance(v1, TransitHmacKey) and isinstance(v2, TransitHmacKey) and isinstance(latest, TransitHmacKey)
    assert v1.hexdigest(msg) == hmac.new(old.encode(), msg, hashlib.sha256).hexdigest()
    assert v2.hexdigest(msg) == hmac.new(new.encode(), msg, hashlib.sha256).hexdigest()
    assert latest.hexdigest(msg) == v2.hexdigest(msg)
    with pytest.raises(ValueError, match="no version 3"):
        signer(transit, name, 3)


def test_transit_import_refuses_another_key_type_under_the_same_name(transit: TransitClient) -> None:
    local, _ = _both(transit, binance.EXCHANGE, {"api_key": "k", "api_secret": _HMAC})
    name = f"mixed-{uuid.uuid4().hex[:10]}"
    import_key(transit, name, local.key)
    ed = binance.EXCHANGE.load_credentials({"api_key": Secret("k"), "api_secret": Secret(_ED)}, 1)
    with pytest.raises(TransitError, match="type hmac"):
        import_key(transit, name, ed.key)


def test_transit_import_refuses_an_exportable_key(transit: TransitClient) -> None:
    """A key someone created exportable must never receive an exchange secret."""
    local, _ = _both(transit, binance.EXCHANGE, {"api_key": "k", "api_secret": _HMAC})
    name = f"exportable-{uuid.uuid4().hex[:10]}"
    transit.call("POST", f"keys/{name}", {"type": "hmac", "key_size": 32, "exportable": True})
    with pytest.raises(TransitError, match="can be exported"):
        import_key(transit, name, local.key)


def test_transit_credentials_refuse_api_secret_in_kv(transit: TransitClient) -> None:
    local, _ = _both(transit, binance.EXCHANGE, {"api_key": "k", "api_secret": _HMAC})
    name = f"kv-{uuid.uuid4().hex[:10]}"
    import_key(transit, name, local.key)
    with pytest.raises(ValueError, match="must live only in Transit"):
        load_credentials(binance.EXCHANGE, {"api_key": Secret("k"), "api_secret": Secret(_HMAC)},
                         1, transit, name)


def test_transit_credentials_refuse_a_key_type_the_exchange_cannot_use(transit: TransitClient) -> None:
    ed = binance.EXCHANGE.load_credentials({"api_key": Secret("k"), "api_secret": Secret(_ED)}, 1)
    name = f"ed-{uuid.uuid4().hex[:10]}"
    import_key(transit, name, ed.key)
    with pytest.raises(ValueError, match="bitstamp does not sign with ed25519 keys"):
        load_credentials(exchanges.get("bitstamp"), {"api_key": Secret("k")}, 1, transit, name)


def test_transit_credentials_still_validate_the_other_fields(transit: TransitClient) -> None:
    okx = exchanges.get("okx")
    local = okx.load_credentials({"api_key": Secret("k"), "api_secret": Secret(_HMAC),
                                  "passphrase": Secret("p")}, 1)
    name = f"okx-{uuid.uuid4().hex[:10]}"
    import_key(transit, name, local.key)
    with pytest.raises(ValueError, match="passphrase"):
        load_credentials(okx, {"api_key": Secret("k")}, 1, transit, name)


def test_transit_missing_key_and_denied_token_are_transit_errors(bao, transit: TransitClient) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TransitError, match="keys import-transit"):
        signer(transit, "no-such-key")
    denied = TransitClient(bao.addr, lambda: "not-a-token")
    with pytest.raises(TransitError, match="denied"):
        signer(denied, "no-such-key")
    gone = TransitClient("http://127.0.0.1:9", lambda: "t", timeout_s=1)
    with pytest.raises(TransitError, match="unreachable"):
        gone.hmac("k", 1, "sha2-256", b"m")


def test_transit_signers_hide_everything(transit: TransitClient) -> None:
    _, creds = _both(transit, binance.EXCHANGE, {"api_key": "k", "api_secret": _HMAC})
    assert _HMAC not in repr(creds) and "transit hmac" in repr(creds)
    with pytest.raises(TypeError):
        pickle.dumps(creds.key)
