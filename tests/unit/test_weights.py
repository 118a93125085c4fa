"""Request weights, from Binance's published per-endpoint weights (independent of the code)."""

from __future__ import annotations

import pytest

from proxy import exchanges
from proxy.exchanges.weights import default_weight_per_minute, request_weight


@pytest.mark.parametrize(("method", "path", "query", "body", "weight"), [
    ("POST", "/api/v3/order", "", b"symbol=BTCUSDT&side=BUY", 1),
    ("DELETE", "/api/v3/order", "symbol=BTCUSDT&orderId=1", b"", 1),
    ("GET", "/api/v3/order", "symbol=BTCUSDT&orderId=1", b"", 4),
    ("GET", "/api/v3/account", "", b"", 20),
    ("GET", "/api/v3/openOrders", "symbol=BTCUSDT", b"", 6),
    ("GET", "/api/v3/openOrders", "", b"", 80),
    ("GET", "/api/v3/ticker/price", "symbol=BTCUSDT", b"", 2),
    ("GET", "/api/v3/ticker/price", "", b"", 4),
    ("GET", "/api/v3/depth", "symbol=BTCUSDT", b"", 5),
    ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=500", b"", 25),
    ("GET", "/api/v3/depth", "symbol=BTCUSDT&limit=5000", b"", 250),
    ("GET", "/api/v3/exchangeInfo", "", b"", 20),
    ("GET", "/api/v3/somethingNew", "", b"", 1),
])
def test_binance_weights(method: str, path: str, query: str, body: bytes, weight: int) -> None:
    assert request_weight("binance", method, path, query, body) == weight


def test_other_exchanges_and_defaults() -> None:
    assert request_weight("kraken", "POST", "/0/private/TradesHistory") == 2
    assert request_weight("kraken", "POST", "/0/private/Balance") == 1
    assert request_weight("okx", "GET", "/api/v5/account/balance") == 1
    defaults = {name: default_weight_per_minute(name) for name in exchanges.NAMES}
    assert {name: w for name, w in defaults.items() if w is not None} == {"binance": 6000}
