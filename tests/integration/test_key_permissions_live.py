"""Withdraw-capable keys at start, with a real proxy process, OpenBao and strict emulators:
refused (503 not_ready naming the reason, /readyz detail, nothing sent), allowed only with
``unsafe_allow_withdraw_capable_key = true``; trade-only keys serve; an unreachable exchange
fails closed and the check is retried until it can be done."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

BINANCE = {"api_key": "binanceWithdrawKey01234", "api_secret": "d" * 64}
OKX = {"api_key": "okx-key-0001", "api_secret": "okx-secret", "passphrase": "okx-pass"}
POLICY = """
version = 1
client = "bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]

[[grants]]
account = "okx-main"
allow = ["read", "trade", "cancel"]
"""


@contextmanager
def _stack(tmp_path: Path, *, binance_withdraw: bool, okx_perm: str, unsafe: bool = False) -> Iterator[Stack]:
    extra = "unsafe_allow_withdraw_capable_key = true" if unsafe else ""
    accounts = [AccountSpec("binance-main", "binance", BINANCE, extra_toml=extra),
                AccountSpec("okx-main", "okx", OKX)]
    with start_stack(tmp_path, accounts, {"bot": POLICY}, start_proxy=False) as stack:
        stack.emulator("binance-main").keys[BINANCE["api_key"]].can_withdraw = binance_withdraw
        stack.emulator("okx-main").perm = okx_perm
        stack.start_proxy(1)
        stack.wait_ready()
        yield stack


def _account(stack: Stack, name: str, path: str) -> httpx.Response:
    return httpx.get(f"{stack.proxy_url}/x/{name}{path}", timeout=15,
                     headers={"Proxy-Authorization": f"Bearer {stack.token('bot')}"})


def _sent(stack: Stack, account: str, path: str) -> int:
    return len([r for r in stack.emulator(account).recorder.all() if r.path == path])


def test_withdraw_capable_keys_are_refused_trade_only_keys_serve(tmp_path: Path) -> None:
    with _stack(tmp_path, binance_withdraw=True, okx_perm="read_only,trade,withdraw") as stack:
        for account, path in (("binance-main", "/api/v3/account"), ("okx-main", "/api/v5/account/balance")):
            r = _account(stack, account, path)
            assert r.status_code == 503 and r.headers["x-proxy-error"] == "not_ready", r.text
            error = proxy_error(r)
            assert error["rule"] == "key_permissions" and "can withdraw" in error["message"]
            assert _sent(stack, account, path) == 0
        ready = httpx.get(stack.admin_url + "/readyz", timeout=5).json()
        assert set(ready["accounts_refused"]) == {"binance-main", "okx-main"}
        assert "unsafe_allow_withdraw_capable_key" in ready["accounts_refused"]["binance-main"]
        # asked the exchange with a correctly signed request (the strict emulator accepted it)
        asked = [r for r in stack.emulator("binance-main").recorder.all()
                 if r.path == "/sapi/v1/account/apiRestrictions"]
        assert asked and all(r.accepted for r in asked)


def test_unsafe_flag_allows_a_withdraw_capable_key_loudly(tmp_path: Path) -> None:
    with _stack(tmp_path, binance_withdraw=True, okx_perm="read_only,trade", unsafe=True) as stack:
        assert _account(stack, "binance-main", "/api/v3/account").status_code == 200
        assert _account(stack, "okx-main", "/api/v5/account/balance").status_code == 200
        assert "accounts_refused" not in httpx.get(stack.admin_url + "/readyz", timeout=5).json()
        log = stack.proxy_log()
        assert "UNSAFE" in log and "binance-main" in log


def test_trade_only_keys_serve(tmp_path: Path) -> None:
    with _stack(tmp_path, binance_withdraw=False, okx_perm="read_only,trade") as stack:
        assert _account(stack, "binance-main", "/api/v3/account").status_code == 200
        assert _account(stack, "okx-main", "/api/v5/account/balance").status_code == 200


def test_failed_check_fails_closed_then_recovers(tmp_path: Path) -> None:
    """The exchange cannot answer the permission check at start: the account is refused (not
    guessed safe), the check is retried with backoff, and the account serves once it passes."""
    policy = POLICY.split("[[grants]]\naccount = \"okx-main\"", maxsplit=1)[0]
    # exchange_clock = false: the armed fault must meet the permission check, not the clock's
    # first server-time request
    spec = AccountSpec("binance-main", "binance", BINANCE, extra_toml="exchange_clock = false")
    with start_stack(tmp_path, [spec], {"bot": policy}, start_proxy=False) as stack:
        emulator = stack.emulator("binance-main")
        emulator.faults.arm(500, {"code": -1000, "msg": "An unknown error occurred"}, count=1)
        stack.start_proxy(1)
        stack.wait_ready()
        r = _account(stack, "binance-main", "/api/v3/account")
        assert r.status_code == 503 and "could not check" in proxy_error(r)["message"], r.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = _account(stack, "binance-main", "/api/v3/account")
            if r.status_code == 200:
                break
            time.sleep(0.5)
        assert r.status_code == 200, r.text


def test_bybit_and_coinbase_withdraw_capable_keys_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    accounts = [AccountSpec("bybit-main", "bybit", {"api_key": "bybit_perm_key_0123",
                                                    "api_secret": "bybit-perm-secret-0123456789abcdef"}),
                AccountSpec("coinbase-main", "coinbase", {"api_key": "organizations/org-p/apiKeys/key-p",
                                                          "api_secret": pem})]
    policy = ('version = 1\nclient = "bot"\n[[grants]]\naccount = "bybit-main"\nallow = ["read"]\n'
              '[[grants]]\naccount = "coinbase-main"\nallow = ["read"]\n')
    with start_stack(tmp_path, accounts, {"bot": policy}, start_proxy=False) as stack:
        stack.emulator("bybit-main").can_withdraw = True
        stack.emulator("coinbase-main").can_transfer = True
        stack.start_proxy(1)
        stack.wait_ready()
        refused = httpx.get(stack.admin_url + "/readyz", timeout=5).json()["accounts_refused"]
        assert set(refused) == {"bybit-main", "coinbase-main"}
        r = _account(stack, "coinbase-main", "/api/v3/brokerage/accounts")
        assert r.status_code == 503 and proxy_error(r)["rule"] == "key_permissions"


BINANCE_B = {"api_key": "binanceWithdrawKey0002B", "api_secret": "e" * 64}


def _binance_pool(stack: Stack) -> None:
    """A second key for binance-main: known to the emulator, in Vault, listed in the pool."""
    from proxy_devkit.emulator.binance import BinanceKey

    stack.emulator("binance-main").add_key(BinanceKey(BINANCE_B["api_key"], hmac_secret=BINANCE_B["api_secret"]))
    stack.vault.client().secrets.kv.v2.create_or_update_secret(
        path="exchanges/binance-b", secret=BINANCE_B, mount_point="secret")
    stack.edit_config('secret = "exchanges/binance-main"',
                      'secrets = ["exchanges/binance-main", "exchanges/binance-b"]')


def test_a_withdraw_capable_pool_key_is_never_used_the_others_serve(tmp_path: Path) -> None:
    """Every key of a pool is vetted, not just the first: the second key can withdraw, so no
    request is ever signed with it (beyond its permission check); the first keeps serving."""
    policy = POLICY.split("[[grants]]\naccount = \"okx-main\"", maxsplit=1)[0]
    with start_stack(tmp_path, [AccountSpec("binance-main", "binance", BINANCE)], {"bot": policy},
                     start_proxy=False) as stack:
        _binance_pool(stack)
        emulator = stack.emulator("binance-main")
        emulator.keys[BINANCE_B["api_key"]].can_withdraw = True
        stack.start_proxy(1)
        stack.wait_ready()
        for _ in range(6):
            r = _account(stack, "binance-main", "/api/v3/account")
            assert r.status_code == 200, r.text
        used = {r.header("X-MBX-APIKEY") for r in emulator.recorder.all() if r.path == "/api/v3/account"}
        assert used == {BINANCE["api_key"]}
        asked = {r.header("X-MBX-APIKEY") for r in emulator.recorder.all()
                 if r.path == "/sapi/v1/account/apiRestrictions"}
        assert asked == {BINANCE["api_key"], BINANCE_B["api_key"]}, "every key of the pool is checked"
        ready = httpx.get(stack.admin_url + "/readyz", timeout=5).json()
        refused = ready["accounts_refused"]
        assert list(refused) == ["binance-main key exchanges/binance-b"], refused
        assert "can withdraw" in refused["binance-main key exchanges/binance-b"]
