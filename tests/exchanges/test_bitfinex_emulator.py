"""The Bitfinex emulator over loopback: strict on keys, signatures and nonces; a working account."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import httpx
import pytest

from proxy.exchanges.bitfinex import EXCHANGE
from proxy.model.request import Inbound, Outbound, Stamp
from proxy.model.sensitive import Secret
from proxy_devkit.emulator.bitfinex import BitfinexState, create
from proxy_devkit.emulator.server import BackgroundServer

KEY = "emulator-bitfinex-key"
SECRET = "emulator-bitfinex-secret-0123456789abcdefghijkl"
JSON = "application/json"
_nonces = itertools.count(1_700_000_000_000_000)


@pytest.fixture
def emu() -> Iterator[tuple[BitfinexState, str]]:
    state, app = create({KEY: {"api_secret": SECRET}})
    with BackgroundServer(app) as server:
        yield state, server.url


def signed(path: str, body: str = "", nonce: int | None = None, secret: str = SECRET,
           key: str = KEY) -> Outbound:
    creds = EXCHANGE.load_credentials({"api_key": Secret(key), "api_secret": Secret(secret)}, 1)
    headers = (("content-type", JSON),) if body else ()
    prepared = EXCHANGE.prepare(Inbound("POST", path, b"", headers, body.encode()))
    return EXCHANGE.sign(prepared, creds, Stamp(0, nonce or next(_nonces)), "127.0.0.1")


def send(url: str, out: Outbound, *, path: str | None = None, body: bytes | None = None,
         status: int = 200) -> Any:
    response = httpx.post(url + (path or out.path_and_query), headers=dict(out.headers),
                          content=out.body if body is None else body)
    assert response.status_code == status, response.text
    return response.json()


def order(amount: str, price: str = "40000", cid: int = 1001) -> str:
    return (f'{{"type":"EXCHANGE LIMIT","symbol":"tBTCUSD","amount":"{amount}",'
            f'"price":"{price}","cid":{cid}}}')


def test_bitfinex_emulator_accepts_valid_and_records(emu: tuple[BitfinexState, str]) -> None:
    state, url = emu
    wallets = send(url, signed("/v2/auth/r/wallets"))
    assert ["exchange", "USD", 100000.0, 0, 100000.0, None, None] in wallets
    (seen,) = state.recorder.all()
    assert seen.accepted and seen.body == b"{}" and seen.header("bfx-signature")


def test_bitfinex_emulator_rejects_body_altered_after_signing(
    emu: tuple[BitfinexState, str]
) -> None:
    state, url = emu
    out = signed("/v2/auth/w/order/submit", order("0.1"))
    tampered = out.body.replace(b'"0.1"', b'"0.9"')
    assert send(url, out, body=tampered, status=500) == ["error", 10100, "apikey: digest invalid"]
    assert state.orders == {}
    assert state.recorder.all()[0].error == "10100"


def test_bitfinex_emulator_rejects_path_altered_after_signing(
    emu: tuple[BitfinexState, str]
) -> None:
    _, url = emu
    out = signed("/v2/auth/r/orders")
    assert send(url, out, path="/v2/auth/r/orders/hist", status=500) == [
        "error", 10100, "apikey: digest invalid"]


def test_bitfinex_emulator_rejects_nonce_altered_after_signing(
    emu: tuple[BitfinexState, str]
) -> None:
    _, url = emu
    out = signed("/v2/auth/r/wallets", nonce=1_800_000_000_000_000)
    headers = {**dict(out.headers), "bfx-nonce": "1800000000000001"}
    response = httpx.post(url + out.path_and_query, headers=headers, content=out.body)
    assert response.status_code == 500
    assert response.json() == ["error", 10100, "apikey: digest invalid"]


def test_bitfinex_emulator_enforces_strictly_increasing_nonce(
    emu: tuple[BitfinexState, str]
) -> None:
    state, url = emu
    first = signed("/v2/auth/r/wallets", nonce=1_900_000_000_000_000)
    send(url, first)
    assert send(url, first, status=500) == ["error", 10114, "nonce: small"]  # replay
    lower = signed("/v2/auth/r/wallets", nonce=1_899_999_999_999_999)
    assert send(url, lower, status=500) == ["error", 10114, "nonce: small"]
    send(url, signed("/v2/auth/r/wallets", nonce=1_900_000_000_000_001))
    assert [r.accepted for r in state.recorder.all()] == [True, False, False, True]


def test_bitfinex_emulator_rejects_unknown_key_and_wrong_secret(
    emu: tuple[BitfinexState, str]
) -> None:
    _, url = emu
    assert send(url, signed("/v2/auth/r/wallets", key="other"), status=500) == [
        "error", 10100, "apikey: invalid"]
    assert send(url, signed("/v2/auth/r/wallets", secret="wrong"), status=500) == [
        "error", 10100, "apikey: digest invalid"]


def test_bitfinex_emulator_order_lifecycle(emu: tuple[BitfinexState, str]) -> None:
    state, url = emu
    placed = send(url, signed("/v2/auth/w/order/submit", order("0.5")))
    assert placed[1] == "on-req" and placed[6] == "SUCCESS"
    order_id = placed[4][0][0]
    duplicate = send(url, signed("/v2/auth/w/order/submit", order("0.2")), status=500)
    assert duplicate[:2] == ["error", 10001]
    (open_order,) = send(url, signed("/v2/auth/r/orders", f'{{"id":[{order_id}]}}'))
    assert open_order[2] == 1001 and open_order[13] == "ACTIVE" and open_order[7] == 0.5
    assert send(url, signed("/v2/auth/r/orders/tBTCUSD"))[0][0] == order_id
    cancelled = send(url, signed("/v2/auth/w/order/cancel", f'{{"id":{order_id}}}'))
    assert cancelled[1] == "oc-req" and cancelled[4][13] == "CANCELED"
    assert send(url, signed("/v2/auth/r/orders")) == []
    assert send(url, signed("/v2/auth/w/order/cancel", f'{{"id":{order_id}}}'), status=500) == [
        "error", 10001, "Order not found."]
    # a market sell (negative amount) fills at the reference price
    sell = '{"type":"EXCHANGE MARKET","symbol":"tBTCUSD","amount":"-1","cid":1002}'
    assert send(url, signed("/v2/auth/w/order/submit", sell))[6] == "SUCCESS"
    assert state.balances["BTC"] == Decimal("1") and state.balances["USD"] == Decimal("150000")
    multi = f'{{"ops":[["on",{order("0.1", cid=2001)}],["on",{order("-0.1", "60000", 2002)}]]}}'
    result = send(url, signed("/v2/auth/w/order/multi", multi))
    assert result[1] == "ox_multi-req" and len(result[4]) == 2


def test_bitfinex_emulator_serves_ccxt(emu: tuple[BitfinexState, str]) -> None:
    """ccxt 4.5.90, signing by itself, loads markets and trades against the emulator."""
    state, url = emu
    ex = ccxt.bitfinex({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False})
    ex.urls["api"] = {"v1": url, "public": url, "private": url}
    markets = ex.load_markets()
    assert markets["BTC/USD"]["id"] == "tBTCUSD"
    assert ex.fetch_balance()["BTC"]["total"] == 2.0
    placed = ex.create_order("BTC/USD", "limit", "sell", 0.01, 60000, {"clientOrderId": 7001})
    assert placed["side"] == "sell" and placed["clientOrderId"] == "7001"
    assert [o["id"] for o in ex.fetch_open_orders("BTC/USD")] == [placed["id"]]
    assert ex.fetch_order(placed["id"], "BTC/USD")["status"] == "open"
    ex.cancel_order(placed["id"])
    assert ex.fetch_open_orders() == []
    assert all(r.accepted for r in state.recorder.all())
