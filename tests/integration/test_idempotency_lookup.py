"""A lost answer to an order (the exchange acted, or did not, and the proxy saw a timeout):
the retry asks the exchange by client order id and places the order only if it is absent.
Real proxy process, real OpenBao, strict emulators with a fault switch, sqlite and Redis."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.redis_server import RedisServer
from tests.support.stack import AccountSpec, Stack, start_stack

PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption()).decode()
ACCOUNTS = [
    AccountSpec("binance-main", "binance", {"api_key": "lookupKey0123456789", "api_secret": "s" * 64}),
    AccountSpec("bybit-main", "bybit", {"api_key": "bybit_lookup_0123", "api_secret": "bybit-lookup-secret-0123456789"}),
    AccountSpec("okx-main", "okx", {"api_key": "okx-lookup-key-0123", "api_secret": "OKXLOOKUPSECRET0123456789",
                                    "passphrase": "LookPass1!"}),
    AccountSpec("kraken-main", "kraken", {"api_key": "kraken-lookup-key-01",
                                          "api_secret": base64.b64encode(b"lookup-secret-" * 5).decode()}),
    AccountSpec("coinbase-main", "coinbase", {"api_key": "organizations/org-lk/apiKeys/key-lk", "api_secret": PEM}),
    AccountSpec("deribit-main", "deribit", {"api_key": "drbLookup1", "api_secret": "deribit-lookup-secret-0123456789"}),
    AccountSpec("bitget-main", "bitget", {"api_key": "bg_lookup_key_0123", "api_secret": "bg-lookup-secret-0123456789",
                                          "passphrase": "LookPass1"}),
    AccountSpec("bitstamp-main", "bitstamp", {"api_key": "bitstampLookupKey0123456789abcd",
                                              "api_secret": "bitstamp-lookup-secret-0123"}),
    AccountSpec("bitfinex-main", "bitfinex", {"api_key": "bitfinex-lookup-key-0123",
                                              "api_secret": "bitfinex-lookup-secret-0123456789"}),
]
POLICY = 'version = 1\nclient = "lookup-bot"\n' + "".join(
    f'\n[[grants]]\naccount = "{a.name}"\nallow = ["read", "trade", "cancel"]\n' for a in ACCOUNTS
)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Order:
    """How to place one order on an exchange, and the field its client order id lives in."""

    account: str
    method: str
    path: str
    field: str
    make: Callable[[str], tuple[dict[str, str], bytes, str]]  # coid -> (headers, body, query)


def _form(params: dict[str, str]) -> bytes:
    return "&".join(f"{k}={v}" for k, v in params.items()).encode()


ORDERS = {
    "binance": Order("binance-main", "POST", "/api/v3/order", "clientOrderId", lambda c: (FORM, _form({
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
        "price": "40000", "newClientOrderId": c}), "")),
    "bybit": Order("bybit-main", "POST", "/v5/order/create", "orderLinkId", lambda c: (JSON, json.dumps({
        "category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01",
        "price": "40000", "orderLinkId": c}).encode(), "")),
    "okx": Order("okx-main", "POST", "/api/v5/trade/order", "clOrdId", lambda c: (JSON, json.dumps({
        "instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "0.01",
        "px": "40000", "clOrdId": c}).encode(), "")),
    "kraken": Order("kraken-main", "POST", "/0/private/AddOrder", "cl_ord_id", lambda c: (FORM, _form({
        "pair": "XBTUSD", "type": "buy", "ordertype": "limit", "volume": "0.01", "price": "40000",
        "cl_ord_id": c}), "")),
    "coinbase": Order("coinbase-main", "POST", "/api/v3/brokerage/orders", "client_order_id",
                      lambda c: (JSON, json.dumps({
                          "client_order_id": c, "product_id": "BTC-USD", "side": "BUY",
                          "order_configuration": {"limit_limit_gtc": {"base_size": "0.01",
                                                                      "limit_price": "40000"}}}).encode(), "")),
    "deribit": Order("deribit-main", "GET", "/api/v2/private/buy", "label", lambda c: (
        {}, b"", f"instrument_name=BTC-PERPETUAL&amount=10&type=limit&price=40000&label={c}")),
    "bitget": Order("bitget-main", "POST", "/api/v2/spot/trade/place-order", "clientOid", lambda c: (
        JSON, json.dumps({"symbol": "BTCUSDT", "side": "buy", "orderType": "limit", "force": "gtc",
                          "price": "40000", "size": "0.01", "clientOid": c}).encode(), "")),
    "bitstamp": Order("bitstamp-main", "POST", "/api/v2/buy/btcusd/", "client_order_id", lambda c: (
        FORM, _form({"amount": "0.01", "price": "40000", "client_order_id": c}), "")),
    # Bitfinex ids are integers: the test's text id is turned into one
    "bitfinex": Order("bitfinex-main", "POST", "/v2/auth/w/order/submit", "cid", lambda c: (
        JSON, json.dumps({"type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "0.01",
                          "price": "40000", "cid": _int_id(c)}).encode(), "")),
}


def _int_id(coid: str) -> int:
    """A stable integer stand-in for a text id (Bitfinex ``cid``), below 2**45."""
    return int.from_bytes(hashlib.sha256(coid.encode()).digest()[:8], "big") % (2**45 - 1) + 1


def _start(tmp_path: Path, state_toml: str | None) -> Iterator[Stack]:
    with start_stack(tmp_path, ACCOUNTS, {"lookup-bot": POLICY}, state_toml=state_toml,
                     start_proxy=False) as stack:
        text = stack.config_path.read_text()  # a short upstream timeout: lost answers come fast
        stack.config_path.write_text(text.replace("[server]\n", "[server]\nupstream_timeout_s = 1.0\n", 1))
        stack.start_proxy()
        stack.wait_ready()
        yield stack


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"lookup-{request.param}")
    if request.param == "sqlite":
        yield from _start(tmp, None)
        return
    with RedisServer() as redis:
        yield from _start(tmp, f'backend = "redis"\nurl = "{redis.url}"')


def _send(stack: Stack, order: Order, coid: str) -> httpx.Response:
    headers, body, query = order.make(coid)
    url = f"{stack.proxy_url}/x/{order.account}{order.path}" + (f"?{query}" if query else "")
    return httpx.request(order.method, url, content=body, timeout=30,
                         headers={**headers, "Proxy-Authorization": f"Bearer {stack.token('lookup-bot')}"})


def _orders(stack: Stack, order: Order, coid: str) -> int:
    """Orders the exchange holds under ``coid`` (its own book, not the proxy's word)."""
    state: Any = stack.emulator(order.account)
    want = str(_int_id(coid)) if order.field == "cid" else coid
    return sum(1 for o in state.orders.values() if str(o.get(order.field)) == want)


@pytest.mark.parametrize("exchange", sorted(ORDERS))
def test_idempotency_lookup_answer_lost_after_placing_finds_the_order(stack: Stack, exchange: str) -> None:
    order = ORDERS[exchange]
    coid = f"lostAfter{exchange[:4]}{stack.dir.name[-3:]}".replace("-", "")
    stack.faults[order.account].arm(order.method, order.path, when="after")
    first = _send(stack, order, coid)
    assert first.status_code == 504 and first.headers["x-proxy-error"] == "upstream_timeout"
    assert _orders(stack, order, coid) == 1, "the exchange placed it; the proxy did not hear back"
    retry = _send(stack, order, coid)
    assert retry.status_code == 200, retry.text
    assert retry.headers.get("x-proxy-order-lookup") == "found"
    assert (str(_int_id(coid)) if exchange == "bitfinex" else coid) in retry.text
    again = _send(stack, order, coid)
    assert again.status_code == 200 and again.content == retry.content
    assert again.headers.get("x-proxy-idempotent-replay") == "true"
    assert _orders(stack, order, coid) == 1


@pytest.mark.parametrize("exchange", sorted(ORDERS))
def test_idempotency_lookup_answer_lost_before_placing_places_once(stack: Stack, exchange: str) -> None:
    order = ORDERS[exchange]
    coid = f"lostBefore{exchange[:4]}{stack.dir.name[-3:]}".replace("-", "")
    stack.faults[order.account].arm(order.method, order.path, when="before")
    first = _send(stack, order, coid)
    assert first.status_code == 504
    assert _orders(stack, order, coid) == 0
    retry = _send(stack, order, coid)
    assert retry.status_code == 200, retry.text
    if exchange != "coinbase":  # Coinbase's lookup is the (idempotent) placement itself
        assert "x-proxy-order-lookup" not in retry.headers  # placed now, not found
    assert _send(stack, order, coid).content == retry.content
    assert _orders(stack, order, coid) == 1


def test_idempotency_lookup_injected_id_is_returned_and_retry_with_it_finds_the_order(stack: Stack) -> None:
    order = ORDERS["binance"]
    headers, body, _ = order.make("x")
    without_id = body.replace(b"&newClientOrderId=x", b"")
    stack.faults[order.account].arm(order.method, order.path, when="after")
    auth = {"Proxy-Authorization": f"Bearer {stack.token('lookup-bot')}"}
    first = httpx.post(f"{stack.proxy_url}/x/binance-main/api/v3/order", content=without_id,
                       headers={**headers, **auth}, timeout=30)
    assert first.status_code == 504
    coid = first.headers["x-proxy-client-order-id"]
    assert coid.startswith("lookupbo") and _orders(stack, order, coid) == 1
    # the bot retries with the id it was given (here placed first in the body: order does not matter)
    retry = httpx.post(f"{stack.proxy_url}/x/binance-main/api/v3/order",
                       content=f"newClientOrderId={coid}&".encode() + without_id,
                       headers={**headers, **auth}, timeout=30)
    assert retry.status_code == 200 and retry.headers.get("x-proxy-order-lookup") == "found"
    assert _orders(stack, order, coid) == 1


def test_idempotency_lookup_injected_id_on_a_normal_order(stack: Stack) -> None:
    auth = {"Proxy-Authorization": f"Bearer {stack.token('lookup-bot')}"}
    r = httpx.post(f"{stack.proxy_url}/x/okx-main/api/v5/trade/order", headers={**JSON, **auth}, timeout=30,
                   content=json.dumps({"instId": "BTC-USDT", "tdMode": "cash", "side": "buy",
                                       "ordType": "limit", "sz": "0.01", "px": "40000"}).encode())
    assert r.status_code == 200, r.text
    coid = r.headers["x-proxy-client-order-id"]
    assert r.json()["data"][0]["clOrdId"] == coid and coid.isalnum()


def test_idempotency_lookup_bitfinex_shows_only_the_order_and_keeps_nonces_in_order(stack: Stack) -> None:
    """Bitfinex lookups read the symbol's order lists: the bot sees its own order only, and the
    lookups take the key's nonce lock like any request (no nonce rejection, increasing nonces)."""
    order = ORDERS["bitfinex"]
    other = ORDERS["bitfinex"].make(f"other{stack.dir.name[-3:]}")
    auth = {"Proxy-Authorization": f"Bearer {stack.token('lookup-bot')}"}
    placed = httpx.post(f"{stack.proxy_url}/x/bitfinex-main{order.path}", content=other[1],
                        headers={**other[0], **auth}, timeout=30)
    assert placed.status_code == 200, placed.text
    coid = f"bfxShow{stack.dir.name[-3:]}"
    stack.faults[order.account].arm(order.method, order.path, when="after")
    assert _send(stack, order, coid).status_code == 504
    retry = _send(stack, order, coid)
    assert retry.status_code == 200 and retry.headers.get("x-proxy-order-lookup") == "found"
    rows = retry.json()
    assert len(rows) == 1 and rows[0][2] == _int_id(coid) and rows[0][3] == "tBTCUSD"
    received = stack.emulator("bitfinex-main").recorder.all()
    assert all(r.accepted for r in received), [r.error for r in received if not r.accepted]
    nonces = [int(dict(r.headers)["bfx-nonce"]) for r in received]
    assert nonces == sorted(nonces) and len(set(nonces)) == len(nonces)
    assert any(r.path == "/v2/auth/r/orders/tBTCUSD" for r in received)
