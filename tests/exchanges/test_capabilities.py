"""Every exchange declares every capability (or says it has none), in its own module, and what
it declares holds: the requests it names are in its own catalogue, the fields it names exist.

This is the check that makes "adding an exchange is one module plus one emulator" true: a new
module that forgets a capability fails here (and under mypy), not in production."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from proxy import exchanges
from proxy.config import Config, load
from proxy.errors import ConfigError
from proxy.exchanges.base import Exchange
from proxy.exchanges.capabilities import Capabilities
from proxy.model.request import Category, Inbound
from proxy.model.sensitive import Secret
from proxy.pipeline.accounts import build
from proxy.pipeline.lookup import InjectsBatchClientOrderIds, InjectsClientOrderIds

NAMES = exchanges.NAMES
HINTS = typing.get_type_hints(Capabilities)


def _fits(value: Any, hint: Any) -> bool:
    """``value`` is of the declared type (unions, ``tuple[X, ...]`` and plain classes)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(_fits(v, item) for v in value)
    if origin is frozenset:
        item = typing.get_args(hint)[0]
        return isinstance(value, frozenset) and all(_fits(v, item) for v in value)
    return isinstance(value, origin or hint)


def test_the_registry_lists_every_exchange_module() -> None:
    """A module that defines an exchange is one the registry can hand out (and mypy checks)."""
    here = Path(exchanges.__file__).parent
    modules = {p.stem for p in here.glob("*.py") if "\nEXCHANGE = " in p.read_text()}
    modules |= {p.parent.name for p in here.glob("*/__init__.py") if "\nEXCHANGE = " in p.read_text()}
    assert modules == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_every_exchange_has_its_strict_emulator(name: str) -> None:
    """The other half of "one package plus one emulator": the test stack starts it by name."""
    module = importlib.import_module(f"proxy_devkit.emulator.{name}")
    assert callable(module.create) and callable(module.create_app)


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_every_one_declared_in_the_exchange_module(name: str) -> None:
    exchange = exchanges.get(name)
    assert exchange.name == name
    module = sys.modules[type(exchange).__module__]
    assert module.__name__ == f"proxy.exchanges.{name}"
    # declared by the exchange itself (not inherited, not looked up elsewhere)
    assert "capabilities" in vars(type(exchange))
    caps = exchange.capabilities
    assert caps is module.CAPABILITIES
    assert isinstance(caps, Capabilities)
    for field in dataclasses.fields(Capabilities):
        value = getattr(caps, field.name)
        assert _fits(value, HINTS[field.name]), f"{name}.{field.name} = {value!r}"
    # a copy made for an account's options keeps them
    assert dataclasses.replace(exchange).capabilities is caps  # type: ignore[type-var]


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_requests_are_in_the_exchange_catalogue(name: str) -> None:
    exchange = exchanges.get(name)
    caps = exchange.capabilities
    if caps.server_time is not None:
        assert exchange.nonce_unit is None, "a server-time endpoint serves window-based signing"
        request = caps.server_time.request()
        prepared = exchange.prepare(Inbound(request.method, request.path_and_query, b"", (), b""))
        assert prepared.category is Category.PUBLIC
    if caps.key_permissions is not None:
        prepared = exchange.prepare(Inbound("GET", caps.key_permissions.path, b"", (), b""))
        assert prepared.category is Category.READ


# One symbol each exchange's ticker must accept, in the exchange's own spelling.
TICKER_SYMBOLS = {
    "binance": ("BTCUSDT", ""), "bybit": ("BTCUSDT", "linear"), "okx": ("BTC-USDT", ""),
    "bitget": ("BTCUSDT", ""), "bitstamp": ("btcusd", ""), "bitfinex": ("tBTCUSD", ""),
    "kraken": ("XBTUSD", ""), "coinbase": ("BTC-USD", ""), "deribit": ("BTC-PERPETUAL", ""),
}


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_ticker_is_a_public_request_of_the_exchange(name: str) -> None:
    exchange = exchanges.get(name)
    ticker = exchange.capabilities.ticker
    assert ticker is not None  # all nine have one today; a tenth may say None
    symbol, market = TICKER_SYMBOLS[name]
    request = ticker.request(symbol, market)
    path, _, query = request.path_and_query.partition("?")
    prepared = exchange.prepare(Inbound("GET", path, query.encode(), (), b""))
    assert prepared.category is Category.PUBLIC


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_account_options_name_real_fields(name: str) -> None:
    exchange = exchanges.get(name)
    caps = exchange.capabilities
    fields = {f.name: f for f in dataclasses.fields(exchange)}  # type: ignore[arg-type]
    assert caps.receive_window == ("recv_window" in fields)
    for switch in caps.testnet_switches:
        assert getattr(exchange, switch) is False, "a testnet switch is off for live accounts"
        assert dataclasses.replace(exchange, **{switch: True})  # type: ignore[type-var]


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_secret_fields_are_what_the_module_loads(name: str) -> None:
    exchange = exchanges.get(name)
    declared = exchange.capabilities.secret_fields
    assert declared[:2] == ("api_key", "api_secret")
    for missing in declared:
        fields = {f: Secret("placeholder") for f in declared if f != missing}
        with pytest.raises(ValueError, match=missing):
            exchange.load_credentials(fields, 1)


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_weights_cost_nothing_negative_for_every_endpoint(name: str) -> None:
    """0 is a documented cost (a request the exchange counts in another of its limits)."""
    exchange = exchanges.get(name)
    weights = exchange.capabilities.weights
    if weights is None:
        return
    catalogue = getattr(sys.modules[type(exchange).__module__], "CATALOGUE")  # noqa: B009
    for ep in catalogue.endpoints:
        assert weights.cost(ep.method, ep.path, "", b"") >= 0, ep


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_client_order_ids_declared_where_the_module_adds_them(name: str) -> None:
    exchange: Exchange = exchanges.get(name)
    rules = exchange.capabilities.client_order_ids
    assert (rules is not None) == isinstance(exchange, InjectsClientOrderIds)
    if isinstance(exchange, InjectsBatchClientOrderIds):
        assert rules is not None


# A placement answer of each exchange (as documented; trimmed) and the order id in it.
PLACED: list[tuple[str, Any, str | None]] = [
    ("binance", {"symbol": "BTCUSDT", "orderId": 28, "orderListId": -1, "clientOrderId": "x"}, "28"),
    ("bybit", {"retCode": 0, "result": {"orderId": "b1", "orderLinkId": "x"}, "time": 1}, "b1"),
    ("okx", {"code": "0", "data": [{"clOrdId": "x", "ordId": "o1", "sCode": "0"}]}, "o1"),
    ("bitget", {"code": "00000", "data": {"orderId": "g1", "clientOid": "x"}}, "g1"),
    ("bitstamp", {"id": "1234", "market": "BTC/USD", "client_order_id": "x"}, "1234"),
    ("bitfinex", [1, "on-req", None, None, [[5, None, 7, "tBTCUSD"]], None, "SUCCESS", "ok"], "5"),
    ("kraken", {"error": [], "result": {"descr": {"order": "buy"}, "txid": ["OX1"]}}, "OX1"),
    ("coinbase", {"success": True, "success_response": {"order_id": "c1", "client_order_id": "x"}}, "c1"),
    ("deribit", {"jsonrpc": "2.0", "id": 42, "result": {"order": {"order_id": "ETH-1", "label": "x"}}},
     "ETH-1"),
]


@pytest.mark.parametrize(("name", "answer", "expected"), PLACED, ids=[p[0] for p in PLACED])
def test_capabilities_order_id_from_a_placement_answer(name: str, answer: Any, expected: str | None) -> None:
    order_ids = exchanges.get(name).capabilities.order_ids
    assert order_ids.extract(json.dumps(answer).encode()) == ((expected,) if expected else ())
    assert order_ids.extract(b"not json") == ()
    assert order_ids.extract(b'{"x": 1}') == ()


# ---------------------------------------------------------------- what the configuration does with them

CONFIG = """
[vault]
addr = "http://127.0.0.1:8200"
[[accounts]]
name = "main"
exchange = "{name}"
secret = "exchanges/main"
{extra}
"""


def _load(tmp_path: Path, name: str, extra: str = "") -> Config:
    path = tmp_path / "proxy.toml"
    path.write_text(CONFIG.format(name=name, extra=extra))
    return load(path)


def _has_testnet(exchange: Exchange) -> bool:
    try:
        exchange.base_url("testnet")
    except (ValueError, KeyError):
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_account_options_follow_the_declaration(tmp_path: Path, name: str) -> None:
    exchange = exchanges.get(name)
    caps = exchange.capabilities
    live = build(_load(tmp_path, name).accounts[0]).exchange
    assert all(getattr(live, s) is False for s in caps.testnet_switches)
    if _has_testnet(exchange):
        testnet = build(_load(tmp_path, name, 'environment = "testnet"').accounts[0]).exchange
        assert all(getattr(testnet, s) is True for s in caps.testnet_switches)
    if caps.receive_window:
        windowed = build(_load(tmp_path, name, "recv_window_ms = 1234").accounts[0]).exchange
        assert vars(windowed)["recv_window"] == 1234
    else:
        with pytest.raises(ConfigError, match="no receive window"):
            _load(tmp_path, name, "recv_window_ms = 1234")
    if caps.server_time is None:
        with pytest.raises(ConfigError, match="no server-time endpoint"):
            _load(tmp_path, name, "exchange_clock = true")
    if caps.transit_signing:
        assert _load(tmp_path, name, 'signing = "transit"').accounts[0].signing == "transit"
    else:
        with pytest.raises(ConfigError, match="cannot sign through Vault Transit"):
            _load(tmp_path, name, 'signing = "transit"')
    weights = caps.weights
    assert _load(tmp_path, name).accounts[0].weight_per_minute == (weights.per_minute if weights else None)
