"""A property per exchange (issue 12, case 4): for generated orders on spot, linear and inverse
instruments, the notional the policy computes equals the notional the strict emulator computes
from its own instrument table.

The policy's side is the real path: the exchange module's ``prepare``, and, when the request
alone does not say how its quantity counts, the module's instrument request answered by the
emulator's own public endpoint and read by the module's ``parse_instrument``. The emulator's
side is its ``order_notional``, which knows nothing of the proxy.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from proxy.model.request import Inbound, Instrument
from proxy.policy.evaluate import order_notional
from proxy_devkit.emulator import bybit as emu_bybit
from proxy_devkit.emulator import bybit_contracts, coinbase_futures, okx_contracts
from proxy_devkit.emulator import coinbase as emu_coinbase
from proxy_devkit.emulator import deribit as emu_deribit
from proxy_devkit.emulator import okx as emu_okx

JSON_CT = (("content-type", "application/json"),)
FORM_CT = (("content-type", "application/x-www-form-urlencoded"),)

#: (inbound, the emulator's notional of that order)
Case = tuple[Inbound, Decimal]

sides = st.sampled_from(["buy", "sell"])
prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("200000"), places=2)
sizes = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("5000"), places=3)
contracts = st.integers(min_value=1, max_value=100_000).map(Decimal)


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _form(pairs: dict[str, str]) -> bytes:
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs.items()).encode()


def _text(d: Decimal) -> str:
    return format(d, "f")


@st.composite
def okx(draw: st.DrawFn) -> Case:
    inst = draw(st.sampled_from(sorted(emu_okx.INSTRUMENTS) + sorted(okx_contracts.CONTRACTS)))
    spot = inst in emu_okx.INSTRUMENTS
    sz, px = draw(sizes if spot else contracts), draw(prices)
    body = {"instId": inst, "tdMode": "cash" if spot else "cross", "side": draw(sides),
            "ordType": "limit", "sz": _text(sz), "px": _text(px)}
    return (Inbound("POST", "/api/v5/trade/order", b"", JSON_CT, _json(body)),
            emu_okx.order_notional(inst, sz, px))


@st.composite
def bybit(draw: st.DrawFn) -> Case:
    markets = [("spot", s) for s in sorted(emu_bybit.SYMBOLS)] + sorted(bybit_contracts.CONTRACTS)
    category, symbol = draw(st.sampled_from(markets))
    qty, price = draw(contracts if category == "inverse" else sizes), draw(prices)
    body = {"category": category, "symbol": symbol, "side": draw(sides).capitalize(),
            "orderType": "Limit", "qty": _text(qty), "price": _text(price)}
    return (Inbound("POST", "/v5/order/create", b"", JSON_CT, _json(body)),
            bybit_contracts.order_notional(category, symbol, qty, price))


@st.composite
def deribit(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(sorted(emu_deribit.INSTRUMENTS)))
    amount, price = draw(contracts if emu_deribit.INSTRUMENTS[name].inverse else sizes), draw(prices)
    query = _form({"instrument_name": name, "amount": _text(amount), "type": "limit", "price": _text(price)})
    return (Inbound("GET", f"/api/v2/private/{draw(sides)}", query, (), b""),
            emu_deribit.order_notional(name, amount, price))


@st.composite
def coinbase(draw: st.DrawFn) -> Case:
    product = draw(st.sampled_from(sorted(emu_coinbase.PRODUCTS) + sorted(coinbase_futures.FUTURES)))
    size = draw(contracts if product in coinbase_futures.FUTURES else sizes)
    price = draw(prices)
    body = {"client_order_id": "prop-1", "product_id": product, "side": draw(sides).upper(),
            "order_configuration": {"limit_limit_gtc": {"base_size": _text(size), "limit_price": _text(price)}}}
    return (Inbound("POST", "/api/v3/brokerage/orders", b"", JSON_CT, _json(body)),
            coinbase_futures.order_notional(product, size, price))


def _spot(name: str, symbols: list[str], make: Callable[[str, str, Decimal, Decimal], Inbound]) -> Any:
    module = importlib.import_module(f"proxy_devkit.emulator.{name}")

    @st.composite
    def strategy(draw: st.DrawFn) -> Case:
        symbol, side, qty, price = draw(st.sampled_from(symbols)), draw(sides), draw(sizes), draw(prices)
        return make(symbol, side, qty, price), module.order_notional(symbol, qty, price)
    return strategy()


STRATEGIES: dict[str, Any] = {
    "okx": okx(), "bybit": bybit(), "deribit": deribit(), "coinbase": coinbase(),
    "binance": _spot("binance", ["BTCUSDT", "ETHUSDT"], lambda s, side, q, p: Inbound(
        "POST", "/api/v3/order", b"", FORM_CT, _form({
            "symbol": s, "side": side.upper(), "type": "LIMIT", "timeInForce": "GTC",
            "quantity": _text(q), "price": _text(p)}))),
    "kraken": _spot("kraken", ["XBTUSD", "XXBTZUSD", "ETHXBT"], lambda s, side, q, p: Inbound(
        "POST", "/0/private/AddOrder", b"", FORM_CT, _form({
            "pair": s, "type": side, "ordertype": "limit", "volume": _text(q), "price": _text(p)}))),
    "bitget": _spot("bitget", ["BTCUSDT", "ETHUSDT"], lambda s, side, q, p: Inbound(
        "POST", "/api/v2/spot/trade/place-order", b"", JSON_CT, _json({
            "symbol": s, "side": side, "orderType": "limit", "force": "gtc", "size": _text(q),
            "price": _text(p)}))),
    "bitstamp": _spot("bitstamp", ["btcusd", "ethusd"], lambda s, side, q, p: Inbound(
        "POST", f"/api/v2/{side}/{s}/", b"", FORM_CT, _form({"amount": _text(q), "price": _text(p)}))),
    "bitfinex": _spot("bitfinex", ["tBTCUSD", "tETHUSD"], lambda s, side, q, p: Inbound(
        "POST", "/v2/auth/w/order/submit", b"", JSON_CT, _json({
            "type": "EXCHANGE LIMIT", "symbol": s, "amount": _text(q if side == "buy" else -q),
            "price": _text(p)}))),
}


def _clients() -> dict[str, TestClient]:
    """The emulators' own apps (public endpoints need no key)."""
    out = {}
    for name in ("okx", "bybit", "deribit", "coinbase"):
        _, app = importlib.import_module(f"proxy_devkit.emulator.{name}").create({})
        out[name] = TestClient(app)
    return out


CLIENTS = _clients()


def policy_notional(exchange: str, inbound: Inbound) -> Decimal:
    module: Any = importlib.import_module(f"proxy.exchanges.{exchange}").EXCHANGE
    (intent,) = module.prepare(inbound).intents
    instruments: dict[str, Instrument] = {}
    if intent.instrument is None:
        assert intent.symbol is not None
        request = module.instrument_request(intent.symbol, intent.market)
        answer = CLIENTS[exchange].get(request.path_and_query)
        assert answer.status_code == 200, answer.text
        instruments[intent.symbol] = module.parse_instrument(intent.symbol, intent.market, answer.content)
    notional = order_notional(intent, None, instruments)
    assert isinstance(notional, Decimal), notional
    return notional


@pytest.mark.parametrize("exchange", sorted(STRATEGIES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_property_policy_notional_equals_the_emulators(exchange: str, data: st.DataObject) -> None:
    inbound, expected = data.draw(STRATEGIES[exchange])
    assert policy_notional(exchange, inbound) == expected


def test_every_kind_is_generated() -> None:
    """The tables the properties draw from hold spot, linear and inverse instruments."""
    assert {c[1] for c in okx_contracts.CONTRACTS.values()} == {"linear", "inverse"}
    assert {c for c, _ in bybit_contracts.CONTRACTS} == {"linear", "inverse"}
    assert {i.inverse for i in emu_deribit.INSTRUMENTS.values()} == {True, False}
    assert coinbase_futures.FUTURES and emu_okx.INSTRUMENTS and emu_bybit.SYMBOLS
