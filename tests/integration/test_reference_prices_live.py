"""Reference prices from every exchange's public ticker, in a real proxy process against the
nine strict emulators: a 2% price band allows an in-band limit order and refuses an
out-of-band one (never sent), follows the exchange's price when it moves, and a base-sized
market order's notional (quantity x reference price) is held to max_order_notional."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.integration.test_attack_corpus import FIELDS
from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

J = "application/json"
F = "application/x-www-form-urlencoded"
#: exchange -> (ticker symbol, emulator price table, key in it)
SYMBOL = {
    "binance": ("BTCUSDT", "SYMBOLS", "BTCUSDT"), "bybit": ("BTCUSDT", "SYMBOLS", "BTCUSDT"),
    "okx": ("BTC-USDT", "INSTRUMENTS", "BTC-USDT"), "bitget": ("BTCUSDT", "SYMBOLS", "BTCUSDT"),
    "bitstamp": ("btcusd", "PAIRS", "btcusd"), "bitfinex": ("tBTCUSD", "PAIRS", "BTCUSD"),
    "kraken": ("XBTUSD", "PAIRS", "XXBTZUSD"), "coinbase": ("BTC-USD", "PRODUCTS", "BTC-USD"),
    "deribit": ("BTC_USDC-PERPETUAL", "INSTRUMENTS", "BTC_USDC-PERPETUAL"),
}
POLICY = 'version = 1\nclient = "mm"\n' + "".join(
    f'\n[[grants]]\naccount = "{name}-main"\nallow = ["read", "trade", "cancel"]\n'
    f'symbols = ["{symbol}"]\nprice_band = "2%"\nmax_order_notional = "1000"\n'
    for name, (symbol, _, _) in SYMBOL.items()
)
_ids = itertools.count(1)


def limit(exchange: str, price: str) -> tuple[str, str, str, str, str]:
    """(method, path, query, content type, body) of a 0.01 BTC limit buy at ``price``."""
    coid = f"band-{next(_ids)}-{int(time.time() * 1000)}"
    return {
        "binance": ("POST", "/api/v3/order", "", F,
                    f"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price={price}"),
        "bybit": ("POST", "/v5/order/create", "", J, '{"category":"spot","symbol":"BTCUSDT","side":"Buy",'
                  f'"orderType":"Limit","qty":"0.01","price":"{price}"}}'),
        "okx": ("POST", "/api/v5/trade/order", "", J, '{"instId":"BTC-USDT","tdMode":"cash","side":"buy",'
                f'"ordType":"limit","sz":"0.01","px":"{price}"}}'),
        "bitget": ("POST", "/api/v2/spot/trade/place-order", "", J, '{"symbol":"BTCUSDT","side":"buy",'
                   f'"orderType":"limit","force":"gtc","size":"0.01","price":"{price}"}}'),
        "bitstamp": ("POST", "/api/v2/buy/btcusd/", "", F, f"amount=0.01&price={price}"),
        "bitfinex": ("POST", "/v2/auth/w/order/submit", "", J, '{"type":"EXCHANGE LIMIT","symbol":"tBTCUSD",'
                     f'"amount":"0.01","price":"{price}"}}'),
        "kraken": ("POST", "/0/private/AddOrder", "", F,
                   f"pair=XBTUSD&type=buy&ordertype=limit&volume=0.01&price={price}"),
        "coinbase": ("POST", "/api/v3/brokerage/orders", "", J, f'{{"client_order_id":"{coid}",'
                     '"product_id":"BTC-USD","side":"BUY","order_configuration":{"limit_limit_gtc":'
                     f'{{"base_size":"0.01","limit_price":"{price}"}}}}}}'),
        "deribit": ("GET", "/api/v2/private/buy",
                    f"instrument_name=BTC_USDC-PERPETUAL&amount=0.01&type=limit&price={price}", "", ""),
    }[exchange]


def market_sell(exchange: str, qty: str) -> tuple[str, str, str, str, str]:
    """A market sell of ``qty`` BTC (base-sized: the notional needs the reference price)."""
    coid = f"mkt-{next(_ids)}-{int(time.time() * 1000)}"
    return {
        "binance": ("POST", "/api/v3/order", "", F, f"symbol=BTCUSDT&side=SELL&type=MARKET&quantity={qty}"),
        "bybit": ("POST", "/v5/order/create", "", J, '{"category":"spot","symbol":"BTCUSDT","side":"Sell",'
                  f'"orderType":"Market","qty":"{qty}"}}'),
        "okx": ("POST", "/api/v5/trade/order", "", J, '{"instId":"BTC-USDT","tdMode":"cash","side":"sell",'
                f'"ordType":"market","sz":"{qty}"}}'),
        "bitget": ("POST", "/api/v2/spot/trade/place-order", "", J, '{"symbol":"BTCUSDT","side":"sell",'
                   f'"orderType":"market","size":"{qty}"}}'),
        "bitstamp": ("POST", "/api/v2/sell/market/btcusd/", "", F, f"amount={qty}"),
        "bitfinex": ("POST", "/v2/auth/w/order/submit", "", J, '{"type":"EXCHANGE MARKET","symbol":"tBTCUSD",'
                     f'"amount":"-{qty}"}}'),
        "kraken": ("POST", "/0/private/AddOrder", "", F, f"pair=XBTUSD&type=sell&ordertype=market&volume={qty}"),
        "coinbase": ("POST", "/api/v3/brokerage/orders", "", J, f'{{"client_order_id":"{coid}",'
                     '"product_id":"BTC-USD","side":"SELL","order_configuration":{"market_market_ioc":'
                     f'{{"base_size":"{qty}"}}}}}}'),
        "deribit": ("GET", "/api/v2/private/sell",
                    f"instrument_name=BTC_USDC-PERPETUAL&amount={qty}&type=market", "", ""),
    }[exchange]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [AccountSpec(f"{ex}-main", ex, FIELDS[ex]) for ex in SYMBOL]
    with start_stack(tmp_path_factory.mktemp("reference-prices"), accounts, {"mm": POLICY}) as s:
        yield s


def send(stack: Stack, exchange: str, request: tuple[str, str, str, str, str]) -> httpx.Response:
    method, path, query, ctype, body = request
    headers = {"Proxy-Authorization": f"Bearer {stack.token('mm')}"}
    if ctype:
        headers["Content-Type"] = ctype
    return httpx.request(method, f"{stack.proxy_url}/x/{exchange}-main{path}" + (f"?{query}" if query else ""),
                         content=body.encode(), headers=headers, timeout=15)


def orders_received(stack: Stack, exchange: str) -> int:
    """How many requests other than tickers the exchange received."""
    return sum(1 for r in stack.emulator(f"{exchange}-main").recorder.all()
               if "ticker" not in r.path.lower() and "/market/products/" not in r.path)


def accepted(exchange: str, r: httpx.Response) -> bool:
    """The exchange accepted the order (each answers success its own way)."""
    if r.status_code != 200 or r.headers.get("x-proxy-error"):
        return False
    data: Any = r.json()
    if exchange == "bybit":
        return bool(data["retCode"] == 0)
    if exchange in ("okx",):
        return bool(data["code"] == "0")
    if exchange == "bitget":
        return bool(data["code"] == "00000")
    if exchange == "kraken":
        return bool(data["error"] == [])
    if exchange == "coinbase":
        return data.get("success") is True
    if exchange == "bitfinex":
        return isinstance(data, list) and data[6] == "SUCCESS"
    if exchange == "deribit":
        return "result" in data
    if exchange == "bitstamp":
        return "id" in data
    return "orderId" in data


def refused(r: httpx.Response, rule: str) -> bool:
    return r.status_code == 403 and proxy_error(r)["rule"] == rule


@pytest.mark.parametrize("exchange", list(SYMBOL))
def test_live_price_band_on_every_exchange(stack: Stack, exchange: str) -> None:
    inside = send(stack, exchange, limit(exchange, "50900"))
    assert accepted(exchange, inside), inside.text
    before = orders_received(stack, exchange)
    for price in ("52000", "48500"):
        outside = send(stack, exchange, limit(exchange, price))
        assert refused(outside, "price_band"), outside.text
        assert "50000" in proxy_error(outside)["message"]
    assert orders_received(stack, exchange) == before


@pytest.mark.parametrize("exchange", list(SYMBOL))
def test_live_market_order_notional_from_the_reference_price(stack: Stack, exchange: str) -> None:
    small = send(stack, exchange, market_sell(exchange, "0.01"))  # 0.01 x 50000 = 500 <= 1000
    assert accepted(exchange, small), small.text
    before = orders_received(stack, exchange)
    large = send(stack, exchange, market_sell(exchange, "0.03"))  # 1500 > 1000
    assert refused(large, "max_order_notional"), large.text
    assert orders_received(stack, exchange) == before


def test_live_price_band_follows_the_exchange_price(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Move every emulator's BTC price to 60000: once the 3 s cache has passed, 50900 is out of
    band and 60500 is in."""
    for exchange, (_, table, key) in SYMBOL.items():
        prices = getattr(importlib.import_module(f"proxy_devkit.emulator.{exchange}"), table)
        old = prices[key]
        if isinstance(old, Decimal):
            new: Any = Decimal(60000)
        elif isinstance(old, tuple):
            new = tuple(Decimal(60000) if isinstance(v, Decimal) else v for v in old)
        else:
            new = dataclasses.replace(old, mark=Decimal(60000))
        monkeypatch.setitem(prices, key, new)
    time.sleep(3.5)
    for exchange in SYMBOL:
        old_band = send(stack, exchange, limit(exchange, "50900"))
        assert refused(old_band, "price_band"), (exchange, old_band.text)
        assert "60000" in proxy_error(old_band)["message"]
        new_band = send(stack, exchange, limit(exchange, "60500"))
        assert accepted(exchange, new_band), (exchange, new_band.text)
    monkeypatch.undo()
    time.sleep(3.5)
    assert accepted("binance", send(stack, "binance", limit("binance", "50900")))


def test_live_no_ticker_answer_refuses(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A symbol the exchange has no ticker for: the band cannot be checked, so it is refused."""
    okx = importlib.import_module("proxy_devkit.emulator.okx")
    monkeypatch.delitem(okx.INSTRUMENTS, "BTC-USDT")
    time.sleep(3.5)
    r = send(stack, "okx", limit("okx", "50000"))
    assert refused(r, "price_band") and "fail closed" in proxy_error(r)["message"], r.text
    assert proxy_error(r)["code"] == "policy_denied"
