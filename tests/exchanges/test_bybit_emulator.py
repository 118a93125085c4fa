"""The Bybit emulator over loopback: strict about signatures, time and orderLinkId, and usable
by ccxt 4.5.90 unchanged. Requests are signed by the proxy's module or by ccxt itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from proxy.exchanges.base import Credentials
from proxy.exchanges.bybit import EXCHANGE
from proxy.model.request import Inbound, Outbound, Stamp
from proxy.model.sensitive import Secret
from proxy_devkit.emulator.bybit import BybitState, create
from proxy_devkit.emulator.server import BackgroundServer

HMAC_KEY, HMAC_SECRET = "HMACKEY0001", "hmac-secret-0001"
RSA_KEY = "RSAKEY0001"
RSA_PEM = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
NOW = 1_750_000_000.0


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[BybitState, str]]:
    state, app = create({HMAC_KEY: {"api_secret": HMAC_SECRET}, RSA_KEY: {"api_secret": RSA_PEM}})
    state.clock = lambda: NOW
    with BackgroundServer(app) as srv:
        yield state, srv.url


@pytest.fixture
def emu(server: tuple[BybitState, str]) -> Iterator[tuple[BybitState, httpx.Client]]:
    state, url = server
    state.orders.clear()
    state.recorder.clear()
    state.clock = lambda: NOW
    with httpx.Client(base_url=url) as client:
        yield state, client


def creds(kind: str = "hmac") -> Credentials:
    key, secret = (HMAC_KEY, HMAC_SECRET) if kind == "hmac" else (RSA_KEY, RSA_PEM)
    return EXCHANGE.load_credentials({"api_key": Secret(key), "api_secret": Secret(secret)}, 1)


def signed(method: str, path: str, params: Any = None, *, kind: str = "hmac",
           now_ms: int = int(NOW * 1000)) -> Outbound:
    if method == "GET":
        query = "&".join(f"{k}={v}" for k, v in (params or {}).items())
        inbound = Inbound("GET", path, query.encode(), (), b"")
    else:
        inbound = Inbound("POST", path, b"", (("content-type", "application/json"),),
                          json.dumps(params or {}).encode())
    return EXCHANGE.sign(EXCHANGE.prepare(inbound), creds(kind), Stamp(now_ms), "127.0.0.1")


def send(client: httpx.Client, out: Outbound, *, path: str | None = None,
         body: bytes | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    target = path or out.path_and_query
    hdrs = {**dict(out.headers), **(headers or {})}
    resp = client.request(out.method, target, content=out.body if body is None else body,
                          headers=hdrs)
    assert resp.status_code == 200
    return resp.json()  # type: ignore[no-any-return]


ORDER = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit",
         "qty": "0.01", "price": "40000", "orderLinkId": "bot-1"}


@pytest.mark.parametrize("kind", ["hmac", "rsa"])
def test_bybit_emulator_accepts_valid_signed_requests(emu: Any, kind: str) -> None:
    _, client = emu
    out = signed("GET", "/v5/account/wallet-balance", {"accountType": "UNIFIED"}, kind=kind)
    reply = send(client, out)
    assert reply["retCode"] == 0
    coins = {c["coin"]: c["walletBalance"] for c in reply["result"]["list"][0]["coin"]}
    assert coins["USDT"] == "100000"
    assert send(client, signed("POST", "/v5/order/create", ORDER, kind=kind))["retCode"] == 0


def test_bybit_emulator_rejects_body_altered_after_signing(emu: Any) -> None:
    _, client = emu
    out = signed("POST", "/v5/order/create", ORDER)
    tampered = out.body.replace(b'"0.01"', b'"0.02"')
    assert tampered != out.body
    reply = send(client, out, body=tampered)
    assert reply["retCode"] == 10004 and "Error sign" in reply["retMsg"]


def test_bybit_emulator_rejects_query_altered_after_signing(emu: Any) -> None:
    state, client = emu
    out = signed("GET", "/v5/order/realtime", {"category": "spot", "symbol": "BTCUSDT"})
    reply = send(client, out, path=out.path_and_query.replace("BTCUSDT", "ETHUSDT"))
    assert reply["retCode"] == 10004
    assert state.recorder.all()[-1].error == "10004"


def test_bybit_emulator_path_is_not_signed_as_on_bybit(emu: Any) -> None:
    # BYB-GUIDE signs timestamp+key+window+payload only; like Bybit, the emulator cannot tell a
    # moved path. The proxy's own path canonicalisation and catalogue are what protect it.
    _, client = emu
    out = signed("GET", "/v5/order/realtime", {"category": "spot"})
    reply = send(client, out, path="/v5/order/history?category=spot")
    assert reply["retCode"] == 0


@pytest.mark.parametrize("header", ["X-BAPI-TIMESTAMP", "X-BAPI-RECV-WINDOW", "X-BAPI-API-KEY"])
def test_bybit_emulator_rejects_auth_headers_altered_after_signing(emu: Any, header: str) -> None:
    _, client = emu
    out = signed("GET", "/v5/account/wallet-balance", {"accountType": "UNIFIED"})
    value = {"X-BAPI-TIMESTAMP": str(int(NOW * 1000) - 1), "X-BAPI-RECV-WINDOW": "60000",
             "X-BAPI-API-KEY": RSA_KEY}[header]
    assert send(client, out, headers={header: value})["retCode"] == 10004


@pytest.mark.parametrize(
    ("offset_ms", "code"),
    [(0, 0), (-4999, 0), (-5000, 0), (-5001, 10002), (999, 0), (1000, 10002), (60_000, 10002)],
)
def test_bybit_emulator_time_window(emu: Any, offset_ms: int, code: int) -> None:
    # BYB-GUIDE: server_time - recv_window <= timestamp < server_time + 1000.
    _, client = emu
    out = signed("GET", "/v5/account/info", now_ms=int(NOW * 1000) + offset_ms)
    assert send(client, out)["retCode"] == code


def test_bybit_emulator_rejects_unknown_key_and_missing_signature(emu: Any) -> None:
    _, client = emu
    out = signed("GET", "/v5/account/info")
    assert send(client, out, headers={"X-BAPI-API-KEY": "NOPE"})["retCode"] == 10003
    bare = client.get("/v5/account/info").json()
    assert bare["retCode"] == 10003 and set(bare) == {"retCode", "retMsg", "result",
                                                      "retExtInfo", "time"}


def test_bybit_emulator_order_lifecycle(emu: Any) -> None:
    state, client = emu
    placed = send(client, signed("POST", "/v5/order/create", ORDER))["result"]
    assert placed["orderLinkId"] == "bot-1"
    q = {"category": "spot", "symbol": "BTCUSDT", "orderLinkId": "bot-1"}
    (order,) = send(client, signed("GET", "/v5/order/realtime", q))["result"]["list"]
    assert order["orderStatus"] == "New" and order["orderId"] == placed["orderId"]
    open_orders = send(client, signed("GET", "/v5/order/realtime", {"category": "spot"}))
    assert [o["orderLinkId"] for o in open_orders["result"]["list"]] == ["bot-1"]
    dup = send(client, signed("POST", "/v5/order/create", ORDER))
    assert dup["retCode"] == 110072
    cancel = {"category": "spot", "symbol": "BTCUSDT", "orderLinkId": "bot-1"}
    assert send(client, signed("POST", "/v5/order/cancel", cancel))["retCode"] == 0
    assert send(client, signed("POST", "/v5/order/cancel", cancel))["retCode"] == 110001
    (order,) = send(client, signed("GET", "/v5/order/realtime", q))["result"]["list"]
    assert order["orderStatus"] == "Cancelled"
    assert send(client, signed("GET", "/v5/order/realtime", {"category": "spot"}))["result"][
        "list"] == []
    # a reused orderLinkId is refused even after the first order is closed
    assert send(client, signed("POST", "/v5/order/create", ORDER))["retCode"] == 110072
    assert len(state.recorder.all()) == 9


def test_bybit_emulator_market_buy_by_value_moves_balances(emu: Any) -> None:
    state, client = emu
    before = dict(state.balances)
    order = {"category": "spot", "symbol": "ETHUSDT", "side": "Buy", "orderType": "Market",
             "qty": "300", "orderLinkId": "mkt-1"}
    assert send(client, signed("POST", "/v5/order/create", order))["retCode"] == 0
    assert state.balances["USDT"] == before["USDT"] - 300
    assert state.balances["ETH"] == before["ETH"] + Decimal("0.1")
    state.balances.update(before)


def test_bybit_emulator_batch_reports_each_order(emu: Any) -> None:
    _, client = emu
    batch = {"category": "spot", "request": [
        {k: v for k, v in ORDER.items() if k != "category"},
        {k: v for k, v in ORDER.items() if k != "category"},
    ]}
    reply = send(client, signed("POST", "/v5/order/create-batch", batch))
    assert [c["code"] for c in reply["retExtInfo"]["list"]] == [0, 110072]


def test_bybit_emulator_serves_ccxt_unchanged(emu: Any, server: tuple[BybitState, str]) -> None:
    state, url = server
    ex = ccxt.bybit({"apiKey": HMAC_KEY, "secret": HMAC_SECRET,
                     "options": {"fetchMarkets": {"types": ["spot"]}}})
    ex.urls["api"] = {k: url for k in ("spot", "futures", "v2", "public", "private")}
    ex.milliseconds = lambda: int(NOW * 1000)
    ex.nonce = lambda: int(NOW * 1000)
    ex.load_markets()
    assert ex.fetch_balance()["total"]["BTC"] == 2.0
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"clientOrderId": "c-1"})
    assert [o["id"] for o in ex.fetch_open_orders("BTC/USDT")] == [order["id"]]
    assert ex.fetch_order(order["id"], "BTC/USDT", {"acknowledged": True})["status"] == "open"
    ex.cancel_order(order["id"], "BTC/USDT")
    assert ex.fetch_open_orders("BTC/USDT") == []
    with pytest.raises(ccxt.InvalidOrder):
        ex.create_order("BTC/USDT", "limit", "buy", 0.01, 40000, {"clientOrderId": "c-1"})
    assert all(r.accepted for r in state.recorder.all()[:-1])
    assert not state.recorder.all()[-1].accepted
