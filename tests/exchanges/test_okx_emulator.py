"""The OKX emulator over loopback: strict about signatures, timestamps, passphrase, demo/live
and clOrdId, and usable by ccxt 4.5.90 unchanged. Requests are signed by the proxy's module or
by ccxt itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import httpx
import pytest

from proxy.exchanges.base import Credentials
from proxy.exchanges.okx import EXCHANGE, TESTNET, Okx
from proxy.model.request import Inbound, Outbound, Stamp
from proxy.model.sensitive import Secret
from proxy_devkit.emulator.okx import OkxState, create
from proxy_devkit.emulator.server import BackgroundServer

KEY, SECRET, PASSPHRASE = "okx-key-1", "okx-secret-1", "okx-pass-1"
NOW = 1_750_000_000.0
NOW_MS = int(NOW * 1000)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[OkxState, str]]:
    state, app = create({KEY: {"api_secret": SECRET, "passphrase": PASSPHRASE}})
    with BackgroundServer(app) as srv:
        yield state, srv.url


@pytest.fixture
def emu(server: tuple[OkxState, str]) -> Iterator[tuple[OkxState, httpx.Client]]:
    state, url = server
    state.orders.clear()
    state.recorder.clear()
    state.clock = lambda: NOW
    with httpx.Client(base_url=url) as client:
        yield state, client


def creds(passphrase: str = PASSPHRASE) -> Credentials:
    return EXCHANGE.load_credentials({"api_key": Secret(KEY), "api_secret": Secret(SECRET),
                                      "passphrase": Secret(passphrase)}, 1)


def signed(method: str, path: str, params: Any = None, *, now_ms: int = NOW_MS,
           exchange: Okx = EXCHANGE, passphrase: str = PASSPHRASE) -> Outbound:
    if method == "GET":
        query = "&".join(f"{k}={v}" for k, v in (params or {}).items())
        inbound = Inbound("GET", path, query.encode(), (), b"")
    else:
        inbound = Inbound("POST", path, b"", (("content-type", "application/json"),),
                          json.dumps(params).encode())
    return exchange.sign(exchange.prepare(inbound), creds(passphrase), Stamp(now_ms), "h")


def send(client: httpx.Client, out: Outbound, *, path: str | None = None,
         body: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    hdrs = {**dict(out.headers), **(headers or {})}
    return client.request(out.method, path or out.path_and_query,
                          content=out.body if body is None else body, headers=hdrs)


def rejected(resp: httpx.Response, code: str) -> bool:
    return resp.status_code == 401 and resp.json() == {"msg": resp.json()["msg"], "code": code}


ORDER = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit",
         "sz": "0.01", "px": "40000", "clOrdId": "bot1"}


def test_okx_emulator_accepts_valid_signed_request(emu: Any) -> None:
    _, client = emu
    resp = send(client, signed("GET", "/api/v5/account/balance"))
    assert resp.status_code == 200 and resp.json()["code"] == "0"
    details = {d["ccy"]: d["cashBal"] for d in resp.json()["data"][0]["details"]}
    assert details["USDT"] == "100000"


def test_okx_emulator_rejects_body_altered_after_signing(emu: Any) -> None:
    state, client = emu
    out = signed("POST", "/api/v5/trade/order", ORDER)
    resp = send(client, out, body=out.body.replace(b'"0.01"', b'"0.02"'))
    assert rejected(resp, "50113")
    assert state.orders == {} and state.recorder.all()[-1].error == "50113"


@pytest.mark.parametrize("new_target", [
    "/api/v5/trade/orders-pending",                      # the path
    "/api/v5/trade/orders-pending?instId=ETH-USDT",      # the query
])
def test_okx_emulator_rejects_path_or_query_altered_after_signing(
    emu: Any, new_target: str
) -> None:
    _, client = emu
    out = signed("GET", "/api/v5/trade/orders-history", {"instId": "BTC-USDT"})
    assert rejected(send(client, out, path=new_target), "50113")


def test_okx_emulator_rejects_timestamp_altered_after_signing(emu: Any) -> None:
    _, client = emu
    out = signed("GET", "/api/v5/account/balance")
    resp = send(client, out, headers={"OK-ACCESS-TIMESTAMP": "2025-06-15T15:06:40.001Z"})
    assert rejected(resp, "50113")


@pytest.mark.parametrize(
    ("offset_ms", "code"),
    [(0, None), (-30_000, None), (-30_001, "50102"), (30_000, None), (30_001, "50102")],
)
def test_okx_emulator_timestamp_window(emu: Any, offset_ms: int, code: str | None) -> None:
    _, client = emu
    resp = send(client, signed("GET", "/api/v5/account/balance", now_ms=NOW_MS + offset_ms))
    assert resp.status_code == 200 if code is None else rejected(resp, code)


@pytest.mark.parametrize("stamp", [str(NOW_MS), "2025-06-15T15:06:40Z",
                                   "2025-06-15T15:06:40.000+00:00", "2025-06-15 15:06:40.000Z"])
def test_okx_emulator_rejects_other_timestamp_formats(emu: Any, stamp: str) -> None:
    _, client = emu
    out = signed("GET", "/api/v5/account/balance")
    assert rejected(send(client, out, headers={"OK-ACCESS-TIMESTAMP": stamp}), "50112")


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [("OK-ACCESS-KEY", "", "50103"), ("OK-ACCESS-PASSPHRASE", "", "50104"),
     ("OK-ACCESS-SIGN", "", "50106"), ("OK-ACCESS-TIMESTAMP", "", "50107"),
     ("OK-ACCESS-KEY", "someone-else", "50111"), ("OK-ACCESS-PASSPHRASE", "guess", "50105"),
     ("x-simulated-trading", "1", "50101")],
)
def test_okx_emulator_auth_header_errors(emu: Any, header: str, value: str, code: str) -> None:
    _, client = emu
    out = signed("GET", "/api/v5/account/balance")
    assert rejected(send(client, out, headers={header: value}), code)


def test_okx_emulator_demo_environment_needs_simulated_header() -> None:
    state, app = create({KEY: {"api_secret": SECRET, "passphrase": PASSPHRASE}},
                        simulated_trading=True)
    state.clock = lambda: NOW
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url) as client:
        live = send(client, signed("GET", "/api/v5/account/balance"))
        demo = send(client, signed("GET", "/api/v5/account/balance", exchange=TESTNET))
    assert rejected(live, "50101") and demo.json()["code"] == "0"


def test_okx_emulator_order_lifecycle(emu: Any) -> None:
    state, client = emu
    placed = send(client, signed("POST", "/api/v5/trade/order", ORDER)).json()
    assert placed["code"] == "0" and placed["data"][0]["clOrdId"] == "bot1"
    ord_id = placed["data"][0]["ordId"]
    q = {"instId": "BTC-USDT", "clOrdId": "bot1"}
    (order,) = send(client, signed("GET", "/api/v5/trade/order", q)).json()["data"]
    assert order["state"] == "live" and order["ordId"] == ord_id
    pending = send(client, signed("GET", "/api/v5/trade/orders-pending", {"instType": "SPOT"}))
    assert [o["clOrdId"] for o in pending.json()["data"]] == ["bot1"]
    dup = send(client, signed("POST", "/api/v5/trade/order", ORDER))
    assert dup.status_code == 200 and dup.json()["code"] == "1"
    assert dup.json()["data"][0]["sCode"] == "51016"
    cancel = {"instId": "BTC-USDT", "clOrdId": "bot1"}
    assert send(client, signed("POST", "/api/v5/trade/cancel-order", cancel)).json()["code"] == "0"
    again = send(client, signed("POST", "/api/v5/trade/cancel-order", cancel)).json()
    assert again["data"][0]["sCode"] == "51400"
    (order,) = send(client, signed("GET", "/api/v5/trade/order", q)).json()["data"]
    assert order["state"] == "canceled"
    missing = send(client, signed("GET", "/api/v5/trade/order", {"instId": "BTC-USDT",
                                                                 "ordId": "1"})).json()
    assert missing["code"] == "51603"
    assert len(state.recorder.all()) == 8


def test_okx_emulator_spot_market_buy_spends_quote_by_default(emu: Any) -> None:
    state, client = emu
    before = dict(state.balances)
    order = {"instId": "ETH-USDT", "tdMode": "cash", "side": "buy", "ordType": "market",
             "sz": "300", "clOrdId": "mkt1"}
    assert send(client, signed("POST", "/api/v5/trade/order", order)).json()["code"] == "0"
    assert state.balances["USDT"] == before["USDT"] - 300
    assert state.balances["ETH"] == before["ETH"] + Decimal("0.1")
    state.balances.update(before)


def test_okx_emulator_batch_reports_each_order(emu: Any) -> None:
    _, client = emu
    batch = [ORDER, ORDER]
    reply = send(client, signed("POST", "/api/v5/trade/batch-orders", batch)).json()
    assert reply["code"] == "2" and [d["sCode"] for d in reply["data"]] == ["0", "51016"]


def test_okx_emulator_serves_ccxt_unchanged(emu: Any, server: tuple[OkxState, str]) -> None:
    state, url = server
    ex = ccxt.okx({"apiKey": KEY, "secret": SECRET, "password": PASSPHRASE,
                   "options": {"fetchMarkets": {"types": ["spot"]}}})
    ex.urls["api"] = {"rest": url}
    ex.nonce = lambda: NOW_MS
    ex.load_markets()
    assert ex.fetch_balance()["total"]["BTC"] == 2.0
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"clientOrderId": "c1"})
    assert [o["id"] for o in ex.fetch_open_orders("BTC/USDT")] == [order["id"]]
    assert ex.fetch_order(order["id"], "BTC/USDT")["status"] == "open"
    ex.cancel_order(order["id"], "BTC/USDT")
    assert ex.fetch_order(order["id"], "BTC/USDT")["status"] == "canceled"
    with pytest.raises(ccxt.InvalidOrder):
        ex.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"clientOrderId": "c1"})
    received = state.recorder.all()
    assert all(r.accepted for r in received[:-1]) and received[-1].error == "51016"
