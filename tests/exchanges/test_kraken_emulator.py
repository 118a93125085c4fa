"""The Kraken emulator over loopback: strict on keys, signatures and nonces; a working account."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import httpx
import pytest

from proxy.exchanges.kraken import EXCHANGE
from proxy.model.request import Inbound, Outbound, Stamp
from proxy.model.sensitive import Secret
from proxy_devkit.emulator.kraken import KrakenState, create
from proxy_devkit.emulator.server import BackgroundServer

KEY = "emulator-kraken-key"
SECRET = base64.b64encode(bytes(range(64))).decode()
FORM = "application/x-www-form-urlencoded"
_nonces = itertools.count(1_700_000_000_000_000)


@pytest.fixture
def emu() -> Iterator[tuple[KrakenState, str]]:
    state, app = create({KEY: {"api_secret": SECRET}})
    with BackgroundServer(app) as server:
        yield state, server.url


def signed(path: str, body: str = "", ctype: str = FORM, nonce: int | None = None,
           secret: str = SECRET, key: str = KEY) -> Outbound:
    creds = EXCHANGE.load_credentials({"api_key": Secret(key), "api_secret": Secret(secret)}, 1)
    headers = (("content-type", ctype),) if body else ()
    prepared = EXCHANGE.prepare(Inbound("POST", path, b"", headers, body.encode()))
    return EXCHANGE.sign(prepared, creds, Stamp(0, nonce or next(_nonces)), "127.0.0.1")


def send(url: str, out: Outbound, *, path: str | None = None, body: bytes | None = None) -> Any:
    response = httpx.post(url + (path or out.path_and_query), headers=dict(out.headers),
                          content=out.body if body is None else body)
    assert response.status_code == 200  # Kraken answers errors with 200 and an error list
    return response.json()


def test_kraken_emulator_accepts_valid_and_records(emu: tuple[KrakenState, str]) -> None:
    state, url = emu
    reply = send(url, signed("/0/private/BalanceEx"))
    assert reply["error"] == [] and reply["result"]["ZUSD"]["balance"] == "100000.0000"
    (seen,) = state.recorder.all()
    assert seen.accepted and seen.path == "/0/private/BalanceEx" and seen.header("API-Sign")


def test_kraken_emulator_rejects_body_altered_after_signing(emu: tuple[KrakenState, str]) -> None:
    state, url = emu
    out = signed("/0/private/AddOrder", "pair=XBTUSD&type=buy&ordertype=limit&volume=1&price=100")
    tampered = out.body.replace(b"volume=1", b"volume=9")
    assert send(url, out, body=tampered) == {"error": ["EAPI:Invalid signature"]}
    assert state.orders == {}
    assert not state.recorder.all()[0].accepted


def test_kraken_emulator_rejects_path_altered_after_signing(emu: tuple[KrakenState, str]) -> None:
    _, url = emu
    out = signed("/0/private/BalanceEx")
    assert send(url, out, path="/0/private/Balance") == {"error": ["EAPI:Invalid signature"]}


def test_kraken_emulator_rejects_nonce_altered_after_signing(emu: tuple[KrakenState, str]) -> None:
    _, url = emu
    out = signed("/0/private/Balance", nonce=1_800_000_000_000_000)
    body = out.body.replace(b"1800000000000000", b"1800000000000001")
    assert send(url, out, body=body) == {"error": ["EAPI:Invalid signature"]}


def test_kraken_emulator_enforces_strictly_increasing_nonce(emu: tuple[KrakenState, str]) -> None:
    state, url = emu
    first = signed("/0/private/Balance", nonce=1_900_000_000_000_000)
    assert send(url, first)["error"] == []
    assert send(url, first) == {"error": ["EAPI:Invalid nonce"]}  # replay: equal nonce
    lower = signed("/0/private/Balance", nonce=1_899_999_999_999_999)
    assert send(url, lower) == {"error": ["EAPI:Invalid nonce"]}
    higher = signed("/0/private/Balance", nonce=1_900_000_000_000_001)
    assert send(url, higher)["error"] == []
    assert [r.accepted for r in state.recorder.all()] == [True, False, False, True]


def test_kraken_emulator_rejects_unknown_key_and_wrong_secret(emu: tuple[KrakenState, str]) -> None:
    _, url = emu
    assert send(url, signed("/0/private/Balance", key="other")) == {"error": ["EAPI:Invalid key"]}
    wrong = base64.b64encode(b"x" * 64).decode()
    assert send(url, signed("/0/private/Balance", secret=wrong)) == {
        "error": ["EAPI:Invalid signature"]}


def test_kraken_emulator_order_lifecycle(emu: tuple[KrakenState, str]) -> None:
    state, url = emu
    order = "pair=XBTUSD&type=buy&ordertype=limit&volume=0.5&price=40000&cl_ord_id=bot-1"
    placed = send(url, signed("/0/private/AddOrder", order))
    assert placed["error"] == []
    (txid,) = placed["result"]["txid"]
    duplicate = send(url, signed("/0/private/AddOrder", order))
    assert duplicate == {"error": ["EOrder:Duplicate order"]}
    query = send(url, signed("/0/private/QueryOrders", f"txid={txid}"))["result"][txid]
    assert query["status"] == "open" and query["cl_ord_id"] == "bot-1"
    assert txid in send(url, signed("/0/private/OpenOrders"))["result"]["open"]
    assert send(url, signed("/0/private/CancelOrder", "cl_ord_id=bot-1"))["result"] == {"count": 1}
    assert send(url, signed("/0/private/OpenOrders"))["result"]["open"] == {}
    assert send(url, signed("/0/private/CancelOrder", f"txid={txid}")) == {
        "error": ["EOrder:Unknown order"]}
    # a market buy sized in quote currency fills at the reference price
    market = "pair=XXBTZUSD&type=buy&ordertype=market&volume=5000&oflags=viqc"
    assert send(url, signed("/0/private/AddOrder", market))["error"] == []
    assert state.balances["XXBT"] == Decimal("2.1")
    batch = ('{"orders":[{"type":"sell","ordertype":"limit","volume":"0.1","price":"70000",'
             '"cl_ord_id":"b-1"},{"type":"sell","ordertype":"limit","volume":"0.1",'
             '"price":"71000","cl_ord_id":"b-2"}],"pair":"XBTUSD"}')
    result = send(url, signed("/0/private/AddOrderBatch", batch, "application/json"))
    assert result["error"] == [] and len(result["result"]["orders"]) == 2


def test_kraken_emulator_serves_ccxt(emu: tuple[KrakenState, str]) -> None:
    """ccxt 4.5.90, signing by itself, loads markets and trades against the emulator."""
    state, url = emu
    ex = ccxt.kraken({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False})
    ex.urls["api"] = {"public": url, "private": url}
    markets = ex.load_markets()
    assert markets["BTC/USD"]["id"] == "XXBTZUSD"
    assert ex.fetch_balance()["BTC"]["total"] == 2.0
    order = ex.create_order("BTC/USD", "limit", "buy", 0.01, 45000, {"clientOrderId": "ccxt-1"})
    assert [o["clientOrderId"] for o in ex.fetch_open_orders("BTC/USD")] == ["ccxt-1"]
    assert ex.fetch_order(order["id"])["status"] == "open"
    ex.cancel_order(order["id"])
    assert ex.fetch_open_orders() == []
    assert all(r.accepted for r in state.recorder.all())


def test_kraken_emulator_cl_ord_id_rules_and_lookup_filter(emu: tuple[KrakenState, str]) -> None:
    _, url = emu
    base = "pair=XBTUSD&type=buy&ordertype=limit&volume=0.01&price=40000&cl_ord_id="
    too_long = send(url, signed("/0/private/AddOrder", base + "a" * 19))
    assert too_long == {"error": ["EGeneral:Invalid arguments:cl_ord_id"]}
    for ok in ("a" * 18, "6d1b345e-2821-40e2-ad83-4ecb18a06876", "da8e4ad59b78481c93e589746b0cf91f"):
        assert send(url, signed("/0/private/AddOrder", base + ok))["error"] == [], ok
    found = send(url, signed("/0/private/OpenOrders", "cl_ord_id=" + "a" * 18))["result"]["open"]
    assert [o["cl_ord_id"] for o in found.values()] == ["a" * 18]
    assert send(url, signed("/0/private/OpenOrders", "cl_ord_id=nope"))["result"]["open"] == {}
    assert send(url, signed("/0/private/ClosedOrders", "cl_ord_id=nope"))["result"]["closed"] == {}
