"""The Bitget emulator over loopback: strict about signatures, time and passphrase; ccxt
(with real keys) parses what it serves; the proxy's signed requests are accepted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import ccxt
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from proxy.exchanges.bitget import EXCHANGE
from proxy.model.request import Inbound, Outbound, Stamp
from proxy.model.sensitive import Secret
from proxy_devkit.emulator.bitget import BitgetState, create
from proxy_devkit.emulator.server import BackgroundServer

KEY, SECRET, PASSPHRASE = "bg_emulator_key", "emulator-secret-0123456789", "Pass-phrase1"
RSA_KEY = "bg_rsa_key"
RSA_PEM = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[BitgetState, str]]:
    state, app = create({KEY: {"api_secret": SECRET, "passphrase": PASSPHRASE},
                         RSA_KEY: {"api_secret": RSA_PEM, "passphrase": PASSPHRASE}})
    with BackgroundServer(app) as server:
        yield state, server.url


def _creds(api_key: str = KEY, secret: str = SECRET):  # type: ignore[no-untyped-def]
    return EXCHANGE.load_credentials({"api_key": Secret(api_key), "api_secret": Secret(secret),
                                      "passphrase": Secret(PASSPHRASE)}, 1)


def _signed(method: str, path: str, query: str = "", body: Any = None,
            now_ms: int | None = None, **kw: str) -> Outbound:
    raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
    headers = (("content-type", "application/json"),) if raw else ()
    prepared = EXCHANGE.prepare(Inbound(method, path, query.encode(), headers, raw))
    creds = _creds(**kw) if kw else _creds()
    return EXCHANGE.sign(prepared, creds, Stamp(now_ms or int(time.time() * 1000)), "h")


def _send(url: str, out: Outbound, *, body: bytes | None = None, path: str | None = None,
          headers: dict[str, str] | None = None) -> httpx.Response:
    hdrs = {**dict(out.headers), **(headers or {})}
    return httpx.request(out.method, url + (path or out.path_and_query), headers=hdrs,
                         content=out.body if body is None else body)


ORDER = {"symbol": "BTCUSDT", "side": "buy", "orderType": "limit", "force": "gtc",
         "price": "40000", "size": "0.01", "clientOid": "emu-limit-1"}


def test_bitget_emulator_accepts_proxy_signed_order_and_records_it(
    emulator: tuple[BitgetState, str]
) -> None:
    state, url = emulator
    r = _send(url, _signed("POST", "/api/v2/spot/trade/place-order", body=ORDER))
    assert r.status_code == 200 and r.json()["code"] == "00000", r.text
    assert r.json()["data"]["clientOid"] == "emu-limit-1"
    last = state.recorder.all()[-1]
    assert last.accepted and last.path == "/api/v2/spot/trade/place-order"
    assert json.loads(last.body) == ORDER and last.header("ACCESS-KEY") == KEY


def test_bitget_emulator_rsa_key_accepted(emulator: tuple[BitgetState, str]) -> None:
    _, url = emulator
    out = _signed("GET", "/api/v2/spot/account/assets", api_key=RSA_KEY, secret=RSA_PEM)
    r = _send(url, out)
    assert r.status_code == 200 and r.json()["code"] == "00000", r.text


def test_bitget_emulator_refuses_tampered_body(emulator: tuple[BitgetState, str]) -> None:
    state, url = emulator
    out = _signed("POST", "/api/v2/spot/trade/place-order", body={**ORDER, "clientOid": "t-1"})
    r = _send(url, out, body=out.body.replace(b'"0.01"', b'"0.02"'))
    assert r.status_code == 400 and r.json()["code"] == "40009"
    assert r.json()["msg"] == "sign signature error" and r.json()["data"] is None
    assert not state.recorder.all()[-1].accepted


def test_bitget_emulator_refuses_tampered_path_and_query(emulator: tuple[BitgetState, str]) -> None:
    _, url = emulator
    out = _signed("GET", "/api/v2/spot/trade/unfilled-orders", query="symbol=BTCUSDT")
    r = _send(url, out, path="/api/v2/spot/trade/history-orders?symbol=BTCUSDT")
    assert r.json()["code"] == "40009"
    r = _send(url, out, path="/api/v2/spot/trade/unfilled-orders?symbol=ETHUSDT")
    assert r.json()["code"] == "40009"


def test_bitget_emulator_refuses_stale_or_altered_timestamp(
    emulator: tuple[BitgetState, str]
) -> None:
    _, url = emulator
    stale = _signed("GET", "/api/v2/spot/account/assets", now_ms=int(time.time() * 1000) - 31_000)
    assert _send(url, stale).json()["code"] == "40008"
    out = _signed("GET", "/api/v2/spot/account/assets")
    moved = str(int(dict(out.headers)["ACCESS-TIMESTAMP"]) + 1)
    assert _send(url, out, headers={"ACCESS-TIMESTAMP": moved}).json()["code"] == "40009"


def test_bitget_emulator_refuses_wrong_passphrase_and_unknown_key(
    emulator: tuple[BitgetState, str]
) -> None:
    _, url = emulator
    out = _signed("GET", "/api/v2/spot/account/assets")
    assert _send(url, out, headers={"ACCESS-PASSPHRASE": "nope"}).json()["code"] == "40012"
    assert _send(url, out, headers={"ACCESS-KEY": "other"}).json()["code"] == "40006"


def test_bitget_emulator_requires_sorted_query_in_signature(
    emulator: tuple[BitgetState, str]
) -> None:
    # A client that signs the query in sent order rather than sorted order is refused.
    _, url = emulator
    ts = str(int(time.time() * 1000))
    q = "symbol=BTCUSDT&limit=10"
    msg = f"{ts}GET/api/v2/spot/trade/unfilled-orders?{q}".encode()
    sig = base64.b64encode(hmac.new(SECRET.encode(), msg, hashlib.sha256).digest()).decode()
    r = httpx.get(f"{url}/api/v2/spot/trade/unfilled-orders?{q}", headers={
        "ACCESS-KEY": KEY, "ACCESS-SIGN": sig, "ACCESS-TIMESTAMP": ts,
        "ACCESS-PASSPHRASE": PASSPHRASE})
    assert r.json()["code"] == "40009"


def _ccxt(url: str) -> Any:
    ex = ccxt.bitget({"apiKey": KEY, "secret": SECRET, "password": PASSPHRASE})
    ex.urls["api"] = {k: url for k in ex.urls["api"]}
    return ex


def test_bitget_emulator_serves_ccxt_load_markets_balance_and_order_lifecycle(
    emulator: tuple[BitgetState, str]
) -> None:
    state, url = emulator
    ex = _ccxt(url)
    markets = ex.load_markets()
    assert {"BTC/USDT", "ETH/USDT"} <= set(markets)
    balance = ex.fetch_balance()
    assert balance["USDT"]["free"] > 0
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 30000,
                            {"clientOrderId": "ccxt-life-1"})
    assert order["clientOrderId"] == "ccxt-life-1"
    fetched = ex.fetch_order(order["id"], "BTC/USDT")
    assert fetched["status"] == "open" and fetched["amount"] == 0.01
    assert order["id"] in [o["id"] for o in ex.fetch_open_orders("BTC/USDT")]
    ex.cancel_order(order["id"], "BTC/USDT")
    assert ex.fetch_order(order["id"], "BTC/USDT")["status"] == "canceled"
    # A quote-sized market buy spends `size` USDT.
    before = ex.fetch_balance()["USDT"]["free"]
    ex.create_order("ETH/USDT", "market", "buy", 300, None,
                    {"clientOrderId": "ccxt-mkt-1", "createMarketBuyOrderRequiresPrice": False})
    assert ex.fetch_balance()["USDT"]["free"] == pytest.approx(before - 300)
    paths = state.recorder.paths()
    assert "/api/v2/spot/public/symbols" in paths and "/api/v2/spot/trade/cancel-order" in paths


def test_bitget_emulator_refuses_duplicate_client_oid(emulator: tuple[BitgetState, str]) -> None:
    _, url = emulator
    order = {**ORDER, "clientOid": "dup-1"}
    assert _send(url, _signed("POST", "/api/v2/spot/trade/place-order", body=order)).json()[
        "code"] == "00000"
    r = _send(url, _signed("POST", "/api/v2/spot/trade/place-order", body=order))
    assert r.status_code == 400 and r.json()["code"] == "43122"


def test_bitget_emulator_batch_orders_and_batch_cancel(emulator: tuple[BitgetState, str]) -> None:
    _, url = emulator
    batch = {"symbol": "BTCUSDT", "orderList": [
        {**ORDER, "clientOid": "bb-1"}, {**ORDER, "clientOid": "bb-2", "price": "41000"}]}
    data = _send(url, _signed("POST", "/api/v2/spot/trade/batch-orders", body=batch)).json()["data"]
    assert [o["clientOid"] for o in data["successList"]] == ["bb-1", "bb-2"]
    cancel = {"symbol": "BTCUSDT", "orderList": [{"clientOid": "bb-1"}, {"clientOid": "bb-2"}]}
    data = _send(url, _signed("POST", "/api/v2/spot/trade/batch-cancel-order",
                              body=cancel)).json()["data"]
    assert len(data["successList"]) == 2 and data["failureList"] == []
