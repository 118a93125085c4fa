"""Request weights, from the exchanges' published costs (independent of the code): Binance
spot ``rest-api.md`` "Weight" sections (and ccxt's IP weights for the ``/sapi`` reads), Kraken's
REST call counter, Deribit's credits. Every catalogued endpoint that the proxy forwards on an
exchange with a cost model must have its documented weight."""

from __future__ import annotations

import json
import sys
from urllib.parse import quote

import pytest

from proxy import exchanges
from proxy.exchanges.weights import default_weight_per_minute, request_weight
from proxy.model.request import Action


def symbols(n: int) -> str:
    return "symbols=" + quote(json.dumps([f"S{i}USDT" for i in range(n)]))


@pytest.mark.parametrize(("method", "path", "query", "body", "weight"), [
    ("POST", "/api/v3/order", "", b"symbol=BTCUSDT&side=BUY", 1),
    ("POST", "/api/v3/order/test", "", b"symbol=BTCUSDT&side=BUY", 1),
    ("POST", "/api/v3/order/test", "", b"symbol=BTCUSDT&computeCommissionRates=true", 20),
    ("DELETE", "/api/v3/order", "symbol=BTCUSDT&orderId=1", b"", 1),
    ("GET", "/api/v3/order", "symbol=BTCUSDT&orderId=1", b"", 4),
    ("GET", "/api/v3/account", "", b"", 20),
    ("GET", "/api/v3/openOrders", "symbol=BTCUSDT", b"", 6),
    ("GET", "/api/v3/openOrders", "", b"", 80),
    ("GET", "/api/v3/myTrades", "symbol=BTCUSDT", b"", 20),
    ("GET", "/api/v3/myTrades", "symbol=BTCUSDT&orderId=7", b"", 5),
    ("GET", "/api/v3/myPreventedMatches", "symbol=BTCUSDT&preventedMatchId=1", b"", 2),
    ("GET", "/api/v3/myPreventedMatches", "symbol=BTCUSDT&orderId=1", b"", 20),
    ("GET", "/api/v3/ticker/price", "symbol=BTCUSDT", b"", 2),
    ("GET", "/api/v3/ticker/price", "", b"", 4),
    ("GET", "/api/v3/ticker/price", symbols(3), b"", 4),
    ("GET", "/api/v3/ticker/24hr", "symbol=BTCUSDT", b"", 2),
    ("GET", "/api/v3/ticker/24hr", symbols(20), b"", 2),
    ("GET", "/api/v3/ticker/24hr", symbols(21), b"", 40),
    ("GET", "/api/v3/ticker/24hr", symbols(101), b"", 80),
    ("GET", "/api/v3/ticker/24hr", "", b"", 80),
    # "4 for each requested symbol ... will cap at 200 once the number of symbols is more than 50"
    ("GET", "/api/v3/ticker", "symbol=BTCUSDT", b"", 4),
    ("GET", "/api/v3/ticker", symbols(10), b"", 40),
    ("GET", "/api/v3/ticker", symbols(50), b"", 200),
    ("GET", "/api/v3/ticker", symbols(100), b"", 200),
    ("GET", "/api/v3/ticker", "", b"", 200),
    ("GET", "/api/v3/ticker/tradingDay", "symbol=BTCUSDT", b"", 4),
    ("GET", "/api/v3/ticker/tradingDay", symbols(30), b"", 120),
    ("GET", "/api/v3/ticker/tradingDay", symbols(51), b"", 200),
    ("GET", "/api/v3/ticker/tradingDay", "symbols=not-json", b"", 200),
    ("GET", "/api/v3/depth", "symbol=BTCUSDT", b"", 5),
    ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=500", b"", 25),
    ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=1000", b"", 50),
    ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=5000", b"", 250),
    ("GET", "/api/v3/exchangeInfo", "", b"", 20),
    ("GET", "/api/v3/trades", "symbol=BTCUSDT", b"", 25),
    ("GET", "/api/v3/rateLimit/order", "", b"", 40),
    ("GET", "/sapi/v1/capital/config/getall", "", b"", 10),
    ("GET", "/sapi/v1/account/apiRestrictions", "", b"", 1),
    ("GET", "/api/v3/somethingNew", "", b"", 250),  # unknown: the heaviest, never 1
])
def test_weights_binance(method: str, path: str, query: str, body: bytes, weight: int) -> None:
    assert request_weight("binance", method, path, query, body) == weight


def test_weights_kraken_call_counter() -> None:
    assert request_weight("kraken", "POST", "/0/private/TradesHistory") == 2
    assert request_weight("kraken", "POST", "/0/private/Ledgers") == 2
    assert request_weight("kraken", "POST", "/0/private/Balance") == 1
    # "except AddOrder, CancelOrder which operate on a different limiter"
    assert request_weight("kraken", "POST", "/0/private/AddOrder") == 0
    assert request_weight("kraken", "POST", "/0/private/CancelOrder") == 0


def test_weights_deribit_credits() -> None:
    assert request_weight("deribit", "GET", "/api/v2/private/get_account_summary", "currency=BTC") == 500
    assert request_weight("deribit", "GET", "/api/v2/public/ticker", "instrument_name=BTC-PERPETUAL") == 500
    assert request_weight("deribit", "GET", "/api/v2/private/buy", "instrument_name=BTC-PERPETUAL") == 0


def test_weights_exchanges_without_a_cost_model_and_defaults() -> None:
    assert request_weight("okx", "GET", "/api/v5/account/balance") == 1
    defaults = {name: default_weight_per_minute(name) for name in exchanges.NAMES}
    assert {name: w for name, w in defaults.items() if w is not None} == {"binance": 6000}


def test_weights_the_exchanges_that_publish_costs_declare_them() -> None:
    declared = {name for name in exchanges.NAMES if exchanges.get(name).capabilities.weights is not None}
    assert declared == {"binance", "kraken", "deribit"}


@pytest.mark.parametrize("name", exchanges.NAMES)
def test_weights_every_catalogued_endpoint_has_its_documented_weight(name: str) -> None:
    """Fails when an endpoint is added to the catalogue of an exchange with a cost model
    without its documented weight (it would otherwise be charged the heaviest)."""
    exchange = exchanges.get(name)
    weights = exchange.capabilities.weights
    if weights is None:
        return
    catalogue = getattr(sys.modules[type(exchange).__module__], "CATALOGUE")  # noqa: B009
    missing = [f"{ep.method} {ep.path}" for ep in catalogue.endpoints
               if ep.action is not Action.FORBIDDEN and (ep.method, ep.path) not in weights.documented]
    assert missing == []
