"""``environment = "testnet"`` means the exchange's demo or testnet, never live (issue 12,
case 10): through ``serve``, a Bitget testnet account sends Bitget's demo header
(``paptrading: 1``) on every request to a demo-trading emulator, which refuses a demo key
without it (40099) exactly as Bitget does, while a live account next to it sends none; an
exchange without a testnet stops start-up (exit 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy import exchanges
from tests.support.stack import REPO, AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

FIELDS = {"api_secret": "bitget-demo-secret-0123456789", "passphrase": "demo-pass"}
DEMO = AccountSpec("bitget-demo", "bitget", {"api_key": "bg_demo_key_0001", **FIELDS}, environment="testnet",
                   emulator_options={"demo_trading": True})
LIVE = AccountSpec("bitget-live", "bitget", {"api_key": "bg_live_key_0001", **FIELDS})
MISLABELLED = AccountSpec("bitget-mislabelled", "bitget", {"api_key": "bg_demo_key_0002", **FIELDS},
                          emulator_options={"demo_trading": True})
POLICY = 'version = 1\nclient = "bot"\n' + "".join(
    f'\n[[grants]]\naccount = "{a.name}"\nallow = ["read", "trade", "cancel"]\n' for a in (DEMO, LIVE, MISLABELLED))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("testnet"), [DEMO, LIVE, MISLABELLED], {"bot": POLICY}) as s:
        yield s


def place(stack: Stack, account: str, coid: str) -> httpx.Response:
    body = {"symbol": "BTCUSDT", "side": "buy", "orderType": "limit", "force": "gtc", "size": "0.01",
            "price": "50000", "clientOid": coid}
    return httpx.post(f"{stack.proxy_url}/x/{account}/api/v2/spot/trade/place-order", content=json.dumps(body),
                      headers={"Proxy-Authorization": f"Bearer {stack.token('bot')}",
                               "Content-Type": "application/json"}, timeout=10)


def test_testnet_bitget_sends_the_demo_header_and_never_trades_live(stack: Stack) -> None:
    r = place(stack, "bitget-demo", "tn-demo-1")
    assert r.status_code == 200 and r.json()["code"] == "00000", r.text
    balance = httpx.get(f"{stack.proxy_url}/x/bitget-demo/api/v2/spot/account/assets", timeout=10,
                        headers={"Proxy-Authorization": f"Bearer {stack.token('bot')}"})
    assert balance.status_code == 200, balance.text
    received = [x for x in stack.emulator("bitget-demo").recorder.all() if x.path.startswith("/api/v2/spot/")]
    assert received and all(x.header("paptrading") == "1" for x in received)


def test_testnet_a_live_account_sends_no_demo_header(stack: Stack) -> None:
    r = place(stack, "bitget-live", "tn-live-1")
    assert r.status_code == 200, r.text
    received = [x for x in stack.emulator("bitget-live").recorder.all() if x.path.startswith("/api/v2/spot/")]
    assert received and all(x.header("paptrading") is None for x in received)


def test_testnet_the_demo_emulator_refuses_a_demo_key_without_the_header(stack: Stack) -> None:
    """The emulator is strict, so the tests above prove the header: a demo key configured as
    live (no header) is refused with Bitget's 40099."""
    r = place(stack, "bitget-mislabelled", "tn-mis-1")
    assert r.status_code == 400 and r.json()["code"] == "40099", r.text


@pytest.mark.parametrize("exchange", ["bitfinex", "bitstamp", "kraken"])
def test_testnet_without_a_testnet_start_up_is_refused(tmp_path: Path, exchange: str) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:1"\nadmin_listen = "127.0.0.1:2"\n\n[vault]\naddr = "http://127.0.0.1:3"\n'
        'auth = "token"\nmount = "secret"\n\n[state]\nbackend = "sqlite"\npath = "state.db"\n\n[audit]\n'
        'dir = "audit"\n\n[policies]\ndir = "policies"\n\n[[accounts]]\nname = "main"\n'
        f'exchange = "{exchange}"\nenvironment = "testnet"\nsecret = "exchanges/main"\n')
    config.chmod(0o600)
    (tmp_path / "policies").mkdir()
    out = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(config), "--unsafe-allow-root"],
                         capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert out.returncode == 3, out.stderr
    assert "environment" in out.stderr and "no testnet" in out.stderr


@pytest.mark.parametrize("name", exchanges.NAMES)
def test_testnet_means_a_testnet_host_or_a_demo_switch_on_every_exchange(name: str) -> None:
    """Every exchange: testnet has its own official host, or its account sets the module's
    demo switch, or the configuration refuses it. Nothing else, ever (a new module must choose)."""
    module = exchanges.get(name)
    if exchanges.testnet_problem(module) is not None:
        assert name in ("bitfinex", "bitstamp", "kraken")
        return
    if not module.capabilities.testnet_switches:  # (accounts.build sets the switches: test_capabilities)
        assert module.base_url("testnet") != module.base_url("live")
