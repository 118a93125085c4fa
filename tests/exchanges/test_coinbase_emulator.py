"""The Coinbase emulator over loopback: strict JWT checks, the account, and ccxt parsing it."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import ccxt
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from proxy.exchanges.base import Credentials
from proxy.exchanges.coinbase import EXCHANGE
from proxy.model.request import Inbound, Outbound, Stamp
from proxy.model.sensitive import Secret
from proxy_devkit.emulator import coinbase as emulator
from proxy_devkit.emulator.server import BackgroundServer

KEY_NAME = "organizations/org-1/apiKeys/key-1"
ED_NAME = "organizations/org-1/apiKeys/key-ed"


def _ec_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _ed_secret() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed + pub).decode()


PEM, ED = _ec_pem(), _ed_secret()


@pytest.fixture(scope="module")
def emu() -> Iterator[tuple[emulator.CoinbaseState, str]]:
    state, app = emulator.create({KEY_NAME: {"api_secret": PEM}, ED_NAME: {"api_secret": ED}})
    with BackgroundServer(app) as server:
        yield state, server.url


def creds(name: str = KEY_NAME, secret: str = PEM) -> Credentials:
    return EXCHANGE.load_credentials({"api_key": Secret(name), "api_secret": Secret(secret)}, 1)


def signed(url: str, method: str, path: str, query: str = "", body: Any = None, *,
           now_ms: int | None = None, host: str | None = None,
           c: Credentials | None = None) -> Outbound:
    raw = json.dumps(body).encode() if body is not None else b""
    headers = (("content-type", "application/json"),) if raw else ()
    prepared = EXCHANGE.prepare(Inbound(method, path, query.encode(), headers, raw))
    stamp = Stamp(now_ms if now_ms is not None else int(time.time() * 1000), 0, str(uuid.uuid4()))
    return EXCHANGE.sign(prepared, c or creds(), stamp, host or url.removeprefix("http://"))


def send(url: str, out: Outbound, *, path: str | None = None, body: bytes | None = None
         ) -> httpx.Response:
    target = out.path_and_query if path is None else path
    return httpx.request(out.method, url + target, headers=dict(out.headers),
                         content=out.body if body is None else body)


def test_coinbase_emulator_accepts_valid_es256_and_ed25519(emu: Any) -> None:
    _, url = emu
    for c in (creds(), creds(ED_NAME, ED)):
        resp = send(url, signed(url, "GET", "/api/v3/brokerage/accounts", "limit=250", c=c))
        assert resp.status_code == 200, resp.text
        assert {a["currency"] for a in resp.json()["accounts"]} >= {"USD", "BTC"}


def test_coinbase_emulator_rejects_altered_path(emu: Any) -> None:
    state, url = emu
    out = signed(url, "GET", "/api/v3/brokerage/accounts")
    resp = send(url, out, path="/api/v3/brokerage/orders/historical/batch")
    assert resp.status_code == 401 and resp.text == "Unauthorized\n"
    assert state.recorder.all()[-1].error == "uri does not name this request"


def test_coinbase_emulator_rejects_other_host_in_uri(emu: Any) -> None:
    _, url = emu
    out = signed(url, "GET", "/api/v3/brokerage/accounts", host="api.coinbase.com")
    assert send(url, out).status_code == 401


def test_coinbase_emulator_rejects_expired_future_and_replayed_tokens(emu: Any) -> None:
    state, url = emu
    now = int(time.time() * 1000)
    assert send(url, signed(url, "GET", "/api/v3/brokerage/accounts",
                            now_ms=now - 121_000)).status_code == 401
    assert send(url, signed(url, "GET", "/api/v3/brokerage/accounts",
                            now_ms=now + 10_000)).status_code == 401
    out = signed(url, "GET", "/api/v3/brokerage/accounts")
    assert send(url, out).status_code == 200
    assert send(url, out).status_code == 401  # the JWT nonce is single use
    assert state.recorder.all()[-1].error == "nonce reused"


def test_coinbase_emulator_rejects_wrong_key_and_forged_signature(emu: Any) -> None:
    _, url = emu
    stranger = creds("organizations/org-1/apiKeys/unknown", _ec_pem())
    accounts = "/api/v3/brokerage/accounts"
    assert send(url, signed(url, "GET", accounts, c=stranger)).status_code == 401
    forged = creds(KEY_NAME, _ec_pem())  # right name, wrong private key
    assert send(url, signed(url, "GET", accounts, c=forged)).status_code == 401
    out = signed(url, "GET", "/api/v3/brokerage/accounts")
    token = dict(out.headers)["Authorization"]
    head, claims, sig = token.removeprefix("Bearer ").split(".")
    bad = dict(out.headers) | {"Authorization": f"Bearer {head}.{claims}.{sig[:-4]}AAAA"}
    assert httpx.get(url + out.path_and_query, headers=bad).status_code == 401
    assert httpx.get(url + out.path_and_query).status_code == 401


def test_coinbase_emulator_body_is_not_covered_by_the_jwt(emu: Any) -> None:
    """Coinbase's JWT names only method, host and path (SPECS §8): an altered body still
    verifies. This is why the proxy applies policy to the body it sends, never the bot's."""
    _, url = emu
    order = {"client_order_id": f"b-{uuid.uuid4()}", "product_id": "BTC-USD", "side": "BUY",
             "order_configuration": {"limit_limit_gtc": {"base_size": "0.001",
                                                         "limit_price": "40000"}}}
    out = signed(url, "POST", "/api/v3/brokerage/orders", body=order)
    altered = json.dumps({**order, "client_order_id": "altered"}).encode()
    resp = send(url, out, body=altered)
    assert resp.status_code == 200
    assert resp.json()["success_response"]["client_order_id"] == "altered"


def test_coinbase_emulator_order_lifecycle_and_duplicate_client_id(emu: Any) -> None:
    state, url = emu
    coid = f"life-{uuid.uuid4()}"
    order = {"client_order_id": coid, "product_id": "BTC-USD", "side": "BUY",
             "order_configuration": {"limit_limit_gtc": {"base_size": "0.01",
                                                         "limit_price": "45000"}}}
    placed = send(url, signed(url, "POST", "/api/v3/brokerage/orders", body=order)).json()
    assert placed["success"] is True
    order_id = placed["success_response"]["order_id"]
    count = len(state.orders)
    again = send(url, signed(url, "POST", "/api/v3/brokerage/orders", body=order)).json()
    assert again["success_response"]["order_id"] == order_id and len(state.orders) == count
    got = send(url, signed(url, "GET", f"/api/v3/brokerage/orders/historical/{order_id}")).json()
    assert got["order"]["status"] == "OPEN" and got["order"]["client_order_id"] == coid
    open_orders = send(url, signed(url, "GET", "/api/v3/brokerage/orders/historical/batch",
                                   "order_status=OPEN")).json()["orders"]
    assert order_id in [o["order_id"] for o in open_orders]
    usd = next(a for a in send(url, signed(url, "GET", "/api/v3/brokerage/accounts")).json()[
        "accounts"] if a["currency"] == "USD")
    assert float(usd["hold"]["value"]) >= 450
    cancel = send(url, signed(url, "POST", "/api/v3/brokerage/orders/batch_cancel",
                              body={"order_ids": [order_id]})).json()
    assert cancel["results"][0]["success"] is True
    cancel = send(url, signed(url, "POST", "/api/v3/brokerage/orders/batch_cancel",
                              body={"order_ids": [order_id]})).json()
    assert cancel["results"][0]["success"] is False
    paths = [(r.method, r.path) for r in state.recorder.all()]
    assert ("POST", "/api/v3/brokerage/orders/batch_cancel") in paths


def test_coinbase_emulator_market_quote_buy_and_insufficient_funds(emu: Any) -> None:
    state, url = emu
    btc_before = state.balances["BTC"]
    order = {"client_order_id": f"m-{uuid.uuid4()}", "product_id": "BTC-USD", "side": "BUY",
             "order_configuration": {"market_market_ioc": {"quote_size": "500"}}}
    placed = send(url, signed(url, "POST", "/api/v3/brokerage/orders", body=order)).json()
    assert placed["success"] is True and state.balances["BTC"] > btc_before
    huge = {**order, "client_order_id": f"h-{uuid.uuid4()}",
            "order_configuration": {"market_market_ioc": {"quote_size": "99999999"}}}
    failed = send(url, signed(url, "POST", "/api/v3/brokerage/orders", body=huge)).json()
    assert failed["success"] is False
    assert failed["error_response"]["error"] == "INSUFFICIENT_FUND"


def test_coinbase_emulator_is_parsed_by_ccxt(emu: Any) -> None:
    """ccxt itself (signing with the same key) loads markets, reads balances and places,
    fetches, lists and cancels an order: the emulator answers realistically enough."""
    _, url = emu
    ex = ccxt.coinbase({"apiKey": KEY_NAME, "secret": PEM})
    ex.urls["api"]["rest"] = url.replace("http://", "https://")  # ccxt strips only https://
    fetch = ex.fetch
    ex.fetch = lambda u, method="GET", headers=None, body=None: fetch(
        u.replace("https://", "http://"), method, headers, body)
    markets = ex.load_markets()
    assert "BTC/USD" in markets
    balance = ex.fetch_balance()
    assert balance["USD"]["total"] is not None
    order = ex.create_order("BTC/USD", "limit", "buy", 0.001, 30000,
                            {"client_order_id": f"ccxt-{uuid.uuid4()}"})
    fetched = ex.fetch_order(order["id"])
    assert fetched["status"] == "open" and fetched["symbol"] == "BTC/USD"
    assert order["id"] in [o["id"] for o in ex.fetch_open_orders("BTC/USD")]
    ex.cancel_order(order["id"])
    assert ex.fetch_order(order["id"])["status"] == "canceled"


def test_coinbase_emulator_records_every_request(emu: Any) -> None:
    state, url = emu
    before = len(state.recorder.all())
    httpx.get(url + "/api/v3/brokerage/time")
    httpx.get(url + "/api/v3/brokerage/accounts")
    items = state.recorder.all()[before:]
    assert [(r.path, r.accepted) for r in items] == [
        ("/api/v3/brokerage/time", True), ("/api/v3/brokerage/accounts", False)]
