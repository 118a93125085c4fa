"""The Bitstamp emulator over loopback: host-bound signatures, single-use nonces, the ±150 s
window and empty-body rules are enforced; proxy-signed requests are accepted and ccxt parses
the replies."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import ccxt
import httpx
import pytest

from proxy.exchanges.bitstamp import EXCHANGE
from proxy.model.request import Inbound, Outbound, Stamp
from proxy.model.sensitive import Secret
from proxy_devkit.emulator.bitstamp import BitstampState, create
from proxy_devkit.emulator.server import BackgroundServer

KEY, SECRET = "bitstampemulatorkey0123456789abc", "bitstamp-emulator-secret-0123456789"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[BitstampState, str]]:
    state, app = create({KEY: {"api_secret": SECRET}})
    with BackgroundServer(app) as server:
        yield state, server.url


CREDS = EXCHANGE.load_credentials({"api_key": Secret(KEY), "api_secret": Secret(SECRET)}, 1)


def _signed(url: str, path: str, body: str = "", *, now_ms: int | None = None,
            nonce: str | None = None) -> Outbound:
    headers = (("content-type", FORM),) if body else ()
    prepared = EXCHANGE.prepare(Inbound("POST", path, b"", headers, body.encode()))
    stamp = Stamp(now_ms or int(time.time() * 1000), unique=nonce or str(uuid.uuid4()))
    return EXCHANGE.sign(prepared, CREDS, stamp, urlsplit(url).netloc)


def _send(url: str, out: Outbound, *, body: bytes | None = None, path: str | None = None,
          headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(out.method, url + (path or out.path_and_query),
                         headers={**dict(out.headers), **(headers or {})},
                         content=out.body if body is None else body)


def test_bitstamp_emulator_accepts_proxy_signed_balance_and_signs_reply(
    emulator: tuple[BitstampState, str]
) -> None:
    state, url = emulator
    out = _signed(url, "/api/v2/account_balances/")
    r = _send(url, out)
    assert r.status_code == 200, r.text
    assert "Content-Type" not in dict(out.headers)  # empty body: no Content-Type at all
    h = dict(out.headers)
    want = hmac.new(SECRET.encode(), (h["X-Auth-Nonce"] + h["X-Auth-Timestamp"]
                                      + "application/json").encode() + r.content,
                    hashlib.sha256).hexdigest()
    assert r.headers["x-server-auth-signature"] == want
    balance = ccxt.bitstamp().parse_balance(r.json())
    assert balance["USD"]["free"] > 0
    assert state.recorder.all()[-1].accepted


def test_bitstamp_emulator_accepts_ccxt_style_foo_bar_body(
    emulator: tuple[BitstampState, str]
) -> None:
    _, url = emulator
    assert _send(url, _signed(url, "/api/v2/account_balances/", "foo=bar")).status_code == 200


def test_bitstamp_emulator_refuses_reused_nonce(emulator: tuple[BitstampState, str]) -> None:
    _, url = emulator
    out = _signed(url, "/api/v2/account_balances/")
    assert _send(url, out).status_code == 200
    r = _send(url, out)  # an exact replay
    assert r.status_code == 403
    assert r.json() == {"status": "error", "reason": "Invalid nonce", "code": "API0004"}


def test_bitstamp_emulator_refuses_tampered_body_and_path(
    emulator: tuple[BitstampState, str]
) -> None:
    _, url = emulator
    out = _signed(url, "/api/v2/buy/btcusd/", "amount=0.01&price=40000&client_order_id=t-1")
    r = _send(url, out, body=out.body.replace(b"0.01", b"0.02"))
    assert r.status_code == 403 and r.json()["code"] == "API0005"
    out = _signed(url, "/api/v2/buy/btcusd/", "amount=0.01&price=40000&client_order_id=t-2")
    r = _send(url, out, path="/api/v2/sell/btcusd/")
    assert r.json()["code"] == "API0005"


def test_bitstamp_emulator_refuses_signature_for_another_host(
    emulator: tuple[BitstampState, str]
) -> None:
    _, url = emulator
    headers = ()
    prepared = EXCHANGE.prepare(Inbound("POST", "/api/v2/account_balances/", b"", headers, b""))
    out = EXCHANGE.sign(prepared, CREDS, Stamp(int(time.time() * 1000), unique=str(uuid.uuid4())),
                        "www.bitstamp.net")
    assert _send(url, out).json()["code"] == "API0005"


def test_bitstamp_emulator_enforces_timestamp_window(emulator: tuple[BitstampState, str]) -> None:
    _, url = emulator
    now = int(time.time() * 1000)
    for skew in (-151_000, 151_000):
        r = _send(url, _signed(url, "/api/v2/account_balances/", now_ms=now + skew))
        assert r.status_code == 403 and r.json()["code"] == "API0017"
    out = _signed(url, "/api/v2/account_balances/")
    moved = str(int(dict(out.headers)["X-Auth-Timestamp"]) - 1)
    assert _send(url, out, headers={"X-Auth-Timestamp": moved}).json()["code"] == "API0005"


def test_bitstamp_emulator_refuses_content_type_on_empty_body(
    emulator: tuple[BitstampState, str]
) -> None:
    _, url = emulator
    out = _signed(url, "/api/v2/account_balances/")
    r = _send(url, out, headers={"Content-Type": FORM})
    assert r.json()["code"] == "API0020"


def test_bitstamp_emulator_order_lifecycle(emulator: tuple[BitstampState, str]) -> None:
    state, url = emulator
    ex = ccxt.bitstamp()
    ex.urls["api"] = {"public": url + "/api", "private": url + "/api"}
    markets = ex.load_markets()  # public: served realistically enough for ccxt
    assert {"BTC/USD", "ETH/USD"} <= set(markets)
    r = _send(url, _signed(url, "/api/v2/buy/btcusd/",
                           "amount=0.01&price=40000&client_order_id=life-1"))
    assert r.status_code == 200, r.text
    placed = ex.parse_order(r.json(), markets["BTC/USD"])
    assert placed["clientOrderId"] == "life-1" and placed["amount"] == 0.01
    status = _send(url, _signed(url, "/api/v2/order_status/", "client_order_id=life-1")).json()
    assert ex.parse_order(status)["status"] == "open"
    open_orders = _send(url, _signed(url, "/api/v2/open_orders/all/")).json()
    assert placed["id"] in [o["id"] for o in ex.parse_orders(open_orders)]
    r = _send(url, _signed(url, "/api/v2/cancel_order/", f"id={placed['id']}"))
    assert r.status_code == 200 and r.json()["id"] == int(placed["id"])
    status = _send(url, _signed(url, "/api/v2/order_status/", f"id={placed['id']}")).json()
    assert ex.parse_order(status)["status"] == "canceled"
    # An instant buy spends `amount` USD.
    before = state.balances["usd"]
    r = _send(url, _signed(url, "/api/v2/buy/instant/ethusd/", "amount=300"))
    assert r.status_code == 200 and state.balances["usd"] == before - 300
    assert "/api/v2/cancel_order/" in state.recorder.paths()


def test_bitstamp_emulator_refuses_duplicate_client_order_id(
    emulator: tuple[BitstampState, str]
) -> None:
    _, url = emulator
    body = "amount=0.01&price=40000&client_order_id=dup-1"
    assert _send(url, _signed(url, "/api/v2/buy/btcusd/", body)).status_code == 200
    r = _send(url, _signed(url, "/api/v2/buy/btcusd/", body))
    assert r.status_code == 400 and r.json()["response_code"] == "400.019"
