"""The Deribit emulator over loopback: strict signature, window and nonce checks, the account,
and ccxt parsing it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import ccxt
import httpx
import pytest

from proxy.exchanges.base import Credentials
from proxy.exchanges.deribit import EXCHANGE
from proxy.model.request import Inbound, Outbound, Stamp
from proxy.model.sensitive import Secret
from proxy_devkit.emulator import deribit as emulator
from proxy_devkit.emulator.server import BackgroundServer

CLIENT_ID, SECRET = "emuClient1", "emulator-client-secret-0123456789"


@pytest.fixture(scope="module")
def emu() -> Iterator[tuple[emulator.DeribitState, str]]:
    state, app = emulator.create({CLIENT_ID: {"api_secret": SECRET}})
    with BackgroundServer(app) as server:
        yield state, server.url


def creds(client_id: str = CLIENT_ID, secret: str = SECRET) -> Credentials:
    return EXCHANGE.load_credentials(
        {"api_key": Secret(client_id), "api_secret": Secret(secret)}, 1)


def signed(method: str, query: str = "", *, now_ms: int | None = None,
           unique: str | None = None, c: Credentials | None = None) -> Outbound:
    path = f"/api/v2/private/{method}"
    prepared = EXCHANGE.prepare(Inbound("GET", path, query.encode(), (), b""))
    stamp = Stamp(now_ms if now_ms is not None else int(time.time() * 1000), 0,
                  unique or str(uuid.uuid4()))
    return EXCHANGE.sign(prepared, c or creds(), stamp, "www.deribit.com")


def send(url: str, out: Outbound, target: str | None = None) -> httpx.Response:
    return httpx.request(out.method, url + (target or out.path_and_query),
                         headers=dict(out.headers), content=out.body)


def test_deribit_emulator_accepts_valid_request(emu: Any) -> None:
    _, url = emu
    resp = send(url, signed("get_account_summary", "currency=BTC"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["jsonrpc"] == "2.0" and body["result"]["currency"] == "BTC"
    assert {"usIn", "usOut", "usDiff", "testnet"} <= set(body)


def test_deribit_emulator_rejects_altered_query_and_path(emu: Any) -> None:
    state, url = emu
    out = signed("get_account_summary", "currency=BTC")
    resp = send(url, out, "/api/v2/private/get_account_summary?currency=ETH")
    assert resp.status_code == 401
    assert resp.json()["error"] == {"message": "unauthorized", "code": 13009,
                                    "data": {"reason": "bad signature"}}
    out = signed("get_account_summary", "currency=BTC")
    assert send(url, out, "/api/v2/private/get_account_summaries?currency=BTC").status_code == 401
    assert not state.recorder.all()[-1].accepted


def test_deribit_emulator_rejects_altered_body(emu: Any) -> None:
    _, url = emu
    out = signed("get_account_summaries")
    resp = httpx.request("GET", url + out.path_and_query, headers=dict(out.headers),
                         content=b"extra")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == 13009


def test_deribit_emulator_rejects_altered_timestamp_and_nonce(emu: Any) -> None:
    _, url = emu
    out = signed("get_account_summaries")
    auth = dict(out.headers)["Authorization"]
    ts = auth.split("ts=")[1].split(",")[0]
    moved = auth.replace(f"ts={ts}", f"ts={int(ts) + 1}")
    assert httpx.get(url + out.path_and_query, headers={"Authorization": moved}).status_code == 401
    renonced = auth.replace("nonce=", "nonce=x")
    resp = httpx.get(url + out.path_and_query, headers={"Authorization": renonced})
    assert resp.status_code == 401


def test_deribit_emulator_timestamp_window(emu: Any) -> None:
    _, url = emu
    now = int(time.time() * 1000)
    assert send(url, signed("get_account_summaries", now_ms=now - 61_000)).status_code == 401
    assert send(url, signed("get_account_summaries", now_ms=now + 5_000)).status_code == 401
    assert send(url, signed("get_account_summaries", now_ms=now - 30_000)).status_code == 200


def test_deribit_emulator_nonce_single_use(emu: Any) -> None:
    state, url = emu
    out = signed("get_account_summaries")
    assert send(url, out).status_code == 200
    resp = send(url, out)
    assert resp.status_code == 401
    assert resp.json()["error"]["data"]["reason"] == "nonce already used"
    assert state.recorder.all()[-1].error == "13009 nonce already used"


def test_deribit_emulator_unknown_client_and_wrong_secret(emu: Any) -> None:
    _, url = emu
    resp = send(url, signed("get_account_summaries", c=creds("nobody", SECRET)))
    assert resp.status_code == 401 and resp.json()["error"]["code"] == 13004
    resp = send(url, signed("get_account_summaries", c=creds(CLIENT_ID, "wrong")))
    assert resp.status_code == 401 and resp.json()["error"]["code"] == 13009
    assert httpx.get(url + "/api/v2/private/get_account_summaries").status_code == 401


def test_deribit_emulator_order_lifecycle(emu: Any) -> None:
    state, url = emu
    label = f"life-{uuid.uuid4().hex[:12]}"
    placed = send(url, signed(
        "buy", f"instrument_name=BTC-PERPETUAL&amount=100&type=limit&price=40000&label={label}"
    )).json()["result"]["order"]
    assert placed["order_state"] == "open" and placed["label"] == label
    again = send(url, signed(
        "buy", f"instrument_name=BTC-PERPETUAL&amount=100&type=limit&price=40000&label={label}"
    )).json()["result"]["order"]
    assert again["order_id"] != placed["order_id"]  # Deribit labels are not unique
    got = send(url, signed("get_order_state", f"order_id={placed['order_id']}")).json()["result"]
    assert got["order_id"] == placed["order_id"] and got["amount"] == 100
    open_ids = [o["order_id"] for o in send(url, signed(
        "get_open_orders_by_currency", "currency=BTC")).json()["result"]]
    assert placed["order_id"] in open_ids
    summary = send(url, signed("get_account_summary", "currency=BTC")).json()["result"]
    assert summary["available_funds"] < summary["equity"]
    for order in (placed, again):
        cancelled = send(url, signed("cancel", f"order_id={order['order_id']}")).json()["result"]
        assert cancelled["order_state"] == "cancelled"
    resp = send(url, signed("cancel", f"order_id={placed['order_id']}"))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == 11044
    resp = send(url, signed("get_order_state", "order_id=BTC-1"))
    assert resp.json()["error"] == {"message": "order_not_found", "code": 10004}
    assert state.orders[placed["order_id"]]["order_state"] == "cancelled"


def test_deribit_emulator_market_order_and_insufficient_funds(emu: Any) -> None:
    _, url = emu
    filled = send(url, signed("sell", "instrument_name=ETH-PERPETUAL&amount=5&type=market"))
    assert filled.json()["result"]["order"]["order_state"] == "filled"
    huge = send(url, signed(
        "buy", "instrument_name=BTC_USDC-PERPETUAL&amount=1000&type=limit&price=50000"))
    assert huge.status_code == 400 and huge.json()["error"]["code"] == 10009


def test_deribit_emulator_is_parsed_by_ccxt(emu: Any) -> None:
    """ccxt itself loads markets, reads balances and places, fetches, lists and cancels an
    order. ccxt's own nonce is the ms time, which can repeat within a millisecond and would be
    refused as reused; a unique one is substituted here."""
    _, url = emu
    ex = ccxt.deribit({"apiKey": CLIENT_ID, "secret": SECRET})
    ex.urls["api"]["rest"] = url
    ex.nonce = lambda: uuid.uuid4().hex
    markets = ex.load_markets()
    assert "BTC/USD:BTC" in markets
    balance = ex.fetch_balance()
    assert balance["BTC"]["total"] == 2
    order = ex.create_order("BTC/USD:BTC", "limit", "buy", 10, 30000, {"label": "ccxt-1"})
    fetched = ex.fetch_order(order["id"])
    assert fetched["status"] == "open" and fetched["info"]["label"] == "ccxt-1"
    assert order["id"] in [o["id"] for o in ex.fetch_open_orders("BTC/USD:BTC")]
    ex.cancel_order(order["id"])
    assert ex.fetch_order(order["id"])["status"] == "canceled"


def test_deribit_emulator_records_every_request(emu: Any) -> None:
    state, url = emu
    before = len(state.recorder.all())
    httpx.get(url + "/api/v2/public/get_time")
    httpx.get(url + "/api/v2/private/withdraw?currency=BTC")
    items = state.recorder.all()[before:]
    assert [(r.path, r.accepted) for r in items] == [
        ("/api/v2/public/get_time", True), ("/api/v2/private/withdraw", False)]
