"""Transit mode end to end: real OpenBao with Transit, strict emulators, a real proxy process.

The accounts' secrets are imported with ``keys import-transit`` (stdin), KV keeps no
api_secret, and the strict emulators accept what Vault signed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import ccxt
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy_devkit.emulator.binance import BinanceKey
from tests.support.stack import AccountSpec, Stack, start_stack

CANARY = "CANARYtransit0123456789abcdefCANARYtransit0123456789abcdefCANARY"
CANARY_2 = "CANARYrotated0123456789abcdefCANARYrotated0123456789abcdefCANAR"
ED_PEM = ed25519.Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
KRAKEN_SECRET = base64.b64encode(b"CANARYkraken" + bytes(range(52))).decode()
TRANSIT = 'signing = "transit"'
POLICY = """
version = 1
client = "bot"

[[grants]]
account = "bn-hmac"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT"]
max_order_qty = "0.5"
max_order_notional = "25000"

[[grants]]
account = "bn-ed"
allow = ["read"]

[[grants]]
account = "kr"
allow = ["read", "trade", "cancel"]
symbols = ["XXBTZUSD"]
max_order_qty = "1"
max_order_notional = "100000"
"""
ACCOUNTS = {
    "bn-hmac": ("binance", {"api_key": "bnTransitKey01", "api_secret": CANARY}),
    "bn-ed": ("binance", {"api_key": "bnTransitKey02", "api_secret": ED_PEM}),
    "kr": ("kraken", {"api_key": "krTransitKey01", "api_secret": KRAKEN_SECRET}),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    specs = [AccountSpec(n, ex, f, extra_toml=TRANSIT) for n, (ex, f) in ACCOUNTS.items()]
    with start_stack(tmp_path_factory.mktemp("transit"), specs, {"bot": POLICY}, start_proxy=False) as s:
        vault = s.vault.client()
        vault.sys.enable_secrets_engine("transit")
        for name, (_, fields) in ACCOUNTS.items():
            done = s.cli("keys", "import-transit", "--account", name, stdin=json.dumps(fields))
            assert done.returncode == 0, done.stderr
            assert "version 1" in done.stderr and fields["api_secret"] not in done.stderr + done.stdout
            # The stack wrote the secret to KV as version 1 (an account moved from local
            # signing): destroy it, as README "Transit mode" says to.
            vault.secrets.kv.v2.destroy_secret_versions(f"exchanges/{name}", [1], mount_point="secret")
        s.start_proxy()
        s.wait_ready()
        yield s


def _call(stack: Stack, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Proxy-Authorization": f"Bearer {stack.token('bot')}"}
    return httpx.request(method, stack.proxy_url + path, headers=headers, timeout=15, **kw)


def _order(coid: str) -> dict[str, str]:
    return {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.01", "price": "50000", "newClientOrderId": coid}


def test_transit_hmac_account_places_an_order_the_emulator_accepts(stack: Stack) -> None:
    r = _call(stack, "POST", "/x/bn-hmac/api/v3/order", data=_order("transit-1"))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "NEW" and r.json()["clientOrderId"] == "transit-1"
    seen = stack.emulator("bn-hmac").recorder.all()[-1]
    assert dict(seen.headers)["x-mbx-apikey"] == "bnTransitKey01"


def test_transit_ed25519_account_reads_its_balance(stack: Stack) -> None:
    r = _call(stack, "GET", "/x/bn-ed/api/v3/account")
    assert r.status_code == 200, r.text
    assert {b["asset"] for b in r.json()["balances"]} >= {"BTC", "USDT"}


def test_transit_kraken_ccxt_bot_with_nonces_and_sha512(stack: Stack) -> None:
    bot = ccxt.kraken({"apiKey": "placeholder", "secret": base64.b64encode(b"x" * 64).decode(),
                       "enableRateLimit": False,
                       "headers": {"Proxy-Authorization": f"Bearer {stack.token('bot')}"}})
    bot.urls["api"] = {"public": stack.proxy_url + "/x/kr", "private": stack.proxy_url + "/x/kr"}
    assert "BTC" in bot.fetch_balance()["total"]
    order = bot.create_order("BTC/USD", "limit", "buy", 0.01, 30000)
    assert order["id"]


def test_transit_kv_holds_no_secret_and_transit_will_not_export(stack: Stack) -> None:
    vault = stack.vault.client()
    for name in ACCOUNTS:
        latest = vault.secrets.kv.v2.read_secret_version(
            path=f"exchanges/{name}", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
        assert set(latest) == {"api_key", "transit_version"}
        info = vault.adapter.get(f"/v1/transit/keys/{name}")["data"]
        assert info["exportable"] is False and info["allow_plaintext_backup"] is False
    export = httpx.get(f"{stack.vault.addr}/v1/transit/export/hmac-key/bn-hmac",
                       headers={"X-Vault-Token": stack.vault.root_token})
    assert export.status_code == 400 and "not exportable" in export.text


def test_transit_import_refuses_bad_input_and_local_accounts(stack: Stack) -> None:
    bad = stack.cli("keys", "import-transit", "--account", "bn-hmac", stdin='{"api_key": "k"}')
    assert bad.returncode == 2 and "api_secret" in bad.stderr
    unusable = stack.cli("keys", "import-transit", "--account", "kr",
                         stdin=json.dumps({"api_key": "k", "api_secret": "not base64 %%% CANARY"}))
    assert unusable.returncode == 2 and "CANARY" not in unusable.stderr
    missing = stack.cli("keys", "import-transit", "--account", "nope", stdin="{}")
    assert missing.returncode == 2


def test_transit_rotation_switches_without_a_failed_request(stack: Stack) -> None:
    """``keys rotate`` on a transit account imports a new Transit version (never writing the
    secret to KV); the proxy follows the KV version and signs with the new key."""
    stack.emulator("bn-hmac").add_key(BinanceKey("bnTransitKey03", hmac_secret=CANARY_2))
    rotated = stack.cli("keys", "rotate", "--account", "bn-hmac",
                        stdin=json.dumps({"api_key": "bnTransitKey03", "api_secret": CANARY_2}))
    assert rotated.returncode == 0, rotated.stderr
    assert "version 2" in rotated.stderr
    deadline, i = time.monotonic() + 20, 0
    while True:
        i += 1
        r = _call(stack, "POST", "/x/bn-hmac/api/v3/order", data=_order(f"rot-{i}"))
        assert r.status_code == 200, r.text
        if dict(stack.emulator("bn-hmac").recorder.all()[-1].headers)["x-mbx-apikey"] == "bnTransitKey03":
            break
        assert time.monotonic() < deadline, "the proxy did not switch to the rotated key"
        time.sleep(0.2)
    latest = stack.vault.client().secrets.kv.v2.read_secret_version(
        path="exchanges/bn-hmac", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    assert latest == {"api_key": "bnTransitKey03", "transit_version": "2"}


def test_transit_secrets_never_reach_logs_or_audit(stack: Stack) -> None:
    texts = [stack.proxy_log()] + [p.read_text(errors="replace") for p in (stack.dir / "audit").rglob("*")
                                   if p.is_file()]
    for text in texts:
        for secret in (CANARY, CANARY_2, KRAKEN_SECRET, "CANARY"):
            assert secret not in text


def test_transit_down_is_not_ready_and_nothing_is_sent(stack: Stack) -> None:
    """Last: Transit gone (here: unmounted) refuses with 503 and sends nothing."""
    recorder = stack.emulator("bn-hmac").recorder
    before = len(recorder.all())
    stack.vault.client().sys.disable_secrets_engine("transit")
    r = _call(stack, "POST", "/x/bn-hmac/api/v3/order", data=_order("after-transit"))
    assert r.status_code == 503 and r.headers["x-proxy-error"] == "not_ready", r.text
    assert len(recorder.all()) == before
    assert "CANARY" not in r.text
