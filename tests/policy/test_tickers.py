"""Per-exchange ticker requests and parses (pure), against the answers the exchanges document
(the examples in their API docs, as quoted in ccxt 4.5.90's ``fetch_ticker``/``parse_ticker``),
and the fetch around them: cached, and fail-closed on every doubt, including a stale quote."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest

from proxy.errors import TickerError
from proxy.exchanges.bybit import EXCHANGE as BYBIT
from proxy.exchanges.tickers import Quote, parse_ticker, ticker_market, ticker_request
from proxy.guards.prices import ReferencePrices
from proxy.model.request import Inbound, Outbound
from proxy.upstream import UpstreamResponse

# (exchange, symbol, market, expected path and query, documented answer, price, quote time ms)
DOCUMENTED: list[tuple[str, str, str, str, Any, str, int | None]] = [
    ("binance", "LTCBTC", "", "/api/v3/ticker/price?symbol=LTCBTC",
     {"symbol": "LTCBTC", "price": "4.00000200"}, "4.00000200", None),
    ("bybit", "BTCUSD", "inverse", "/v5/market/tickers?category=inverse&symbol=BTCUSD",
     {"retCode": 0, "retMsg": "OK", "result": {"category": "inverse", "list": [{
         "symbol": "BTCUSD", "lastPrice": "16597.00", "indexPrice": "16598.54", "markPrice": "16596.00",
         "prevPrice24h": "16464.50", "price24hPcnt": "0.008047", "highPrice24h": "30912.50",
         "lowPrice24h": "15700.00", "prevPrice1h": "16595.50", "openInterest": "373504107",
         "openInterestValue": "22505.67", "turnover24h": "2352.94950046", "volume24h": "49337318",
         "fundingRate": "-0.001034", "nextFundingTime": "1672387200000", "predictedDeliveryPrice": "",
         "basisRate": "", "deliveryFeeRate": "", "deliveryTime": "0", "ask1Size": "1",
         "bid1Price": "16596.00", "ask1Price": "16597.50", "bid1Size": "1"}]},
      "retExtInfo": {}, "time": 1672376496682}, "16597.00", 1672376496682),
    ("okx", "ETH-BTC", "", "/api/v5/market/ticker?instId=ETH-BTC",
     {"code": "0", "msg": "", "data": [{
         "instType": "SPOT", "instId": "ETH-BTC", "last": "0.07319", "lastSz": "0.044378",
         "askPx": "0.07322", "askSz": "4.2", "bidPx": "0.0732", "bidSz": "6.050058",
         "open24h": "0.07801", "high24h": "0.07975", "low24h": "0.06019", "volCcy24h": "11788.887619",
         "vol24h": "167493.829229", "ts": "1621440583784", "sodUtc0": "0.07872", "sodUtc8": "0.07345"}]},
     "0.07319", 1621440583784),
    ("bitget", "BTCUSDT", "", "/api/v2/spot/market/tickers?symbol=BTCUSDT",
     {"code": "00000", "msg": "success", "requestTime": 1700532903300, "data": [{
         "open": "37202.46", "symbol": "BTCUSDT", "high24h": "37744.75", "low24h": "36666",
         "lastPr": "37583.69", "quoteVolume": "519127705.303", "baseVolume": "13907.0386",
         "usdtVolume": "519127705.302908", "ts": "1700532903261", "bidPr": "37583.68",
         "askPr": "37583.69", "bidSz": "0.0007", "askSz": "0.0829", "openUtc": "37449.4",
         "changeUtc24h": "0.00359", "change24h": "0.00321"}]}, "37583.69", 1700532903261),
    ("bitstamp", "btcusd", "", "/api/v2/ticker/btcusd/",
     {"timestamp": "1686068944", "high": "26252", "last": "26216", "bid": "26208", "vwap": "25681",
      "volume": "3563.13819902", "low": "25350", "ask": "26211", "open": "25730", "open_24": "25895",
      "percent_change_24": "1.24", "pair": "BTC/USD"}, "26216", 1686068944000),
    ("bitfinex", "tBTCUSD", "", "/v2/ticker/tBTCUSD",
     [10645, 73.93854271, 10647, 75.22266119, 731.60645389, 0.0738, 10644.00645389, 14480.89849423,
      10766, 9889.1449809], "10644.00645389", None),
    ("bitfinex", "tTESTBTC:TESTUSD", "", "/v2/ticker/tTESTBTC:TESTUSD",
     [50000, 1, 50001, 1, 0, 0, 50000.5, 10, 50001, 49999], "50000.5", None),
    ("kraken", "XBTUSD", "", "/0/public/Ticker?pair=XBTUSD",
     {"error": [], "result": {"XXBTZUSD": {
         "a": ["30300.10000", "1", "1.000"], "b": ["30300.00000", "1", "1.000"],
         "c": ["30303.20000", "0.00067643"], "v": ["4083.67001100", "4412.73601799"],
         "p": ["30706.77771", "30689.13205"], "t": [34619, 38907], "l": ["29868.30000", "29868.30000"],
         "h": ["31631.00000", "31631.00000"], "o": "30502.80000"}}}, "30303.20000", None),
    ("coinbase", "BTC-USD", "", "/api/v3/brokerage/market/products/BTC-USD",
     {"product_id": "BTC-USD", "price": "140.21", "price_percentage_change_24h": "9.43%",
      "volume_24h": "1908432", "volume_percentage_change_24h": "9.43%", "base_increment": "0.00000001",
      "quote_increment": "0.00000001", "quote_min_size": "0.00000001", "quote_max_size": "1000",
      "base_min_size": "0.00000001", "base_max_size": "1000", "base_name": "Bitcoin",
      "quote_name": "US Dollar", "watched": True, "is_disabled": False, "new": True,
      "status": "online", "cancel_only": True, "limit_only": True, "post_only": True,
      "trading_disabled": False, "auction_mode": True, "product_type": "SPOT"}, "140.21", None),
    ("deribit", "BTC-PERPETUAL", "", "/api/v2/public/ticker?instrument_name=BTC-PERPETUAL",
     {"jsonrpc": "2.0", "id": 8106, "result": {
         "timestamp": 1583778859480, "stats": {"volume": 60627.57263769, "low": 7631.5, "high": 8311.5},
         "state": "open", "settlement_price": 7903.21, "open_interest": 111543850, "min_price": 7634,
         "max_price": 7866.51, "mark_price": 7750.02, "last_price": 7750.5,
         "instrument_name": "BTC-PERPETUAL", "index_price": 7748.01, "funding_8h": 0.0000026,
         "current_funding": 0, "best_bid_price": 7750, "best_bid_amount": 19470,
         "best_ask_price": 7750.5, "best_ask_amount": 343280},
      "usIn": 1583778859480000, "usOut": 1583778859480500, "usDiff": 500, "testnet": False},
     "7750.5", 1583778859480),
]


def _body(data: Any) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize(("exchange", "symbol", "market", "path", "answer", "price", "at"), DOCUMENTED,
                         ids=[f"{d[0]}-{d[1]}" for d in DOCUMENTED])
def test_tickers_request_and_documented_answer(
    exchange: str, symbol: str, market: str, path: str, answer: Any, price: str, at: int | None,
) -> None:
    request = ticker_request(exchange, symbol, market)
    assert (request.method, request.path_and_query, request.body) == ("GET", path, b"")
    assert not any(k.lower() in ("authorization", "x-mbx-apikey") for k, _ in request.headers)
    assert parse_ticker(exchange, symbol, _body(answer), market) == Quote(Decimal(price), at)


def _replace(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    data = json.loads(json.dumps(data))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


BY_NAME = {(d[0], d[1]): d for d in DOCUMENTED}
# (exchange, symbol, where the price is) -> each bad value must be refused
PRICE_AT: list[tuple[str, str, tuple[Any, ...]]] = [
    ("binance", "LTCBTC", ("price",)), ("bybit", "BTCUSD", ("result", "list", 0, "lastPrice")),
    ("okx", "ETH-BTC", ("data", 0, "last")), ("bitget", "BTCUSDT", ("data", 0, "lastPr")),
    ("bitstamp", "btcusd", ("last",)), ("bitfinex", "tBTCUSD", (6,)),
    ("kraken", "XBTUSD", ("result", "XXBTZUSD", "c", 0)), ("coinbase", "BTC-USD", ("price",)),
    ("deribit", "BTC-PERPETUAL", ("result", "last_price")),
]
BAD_PRICES: list[object] = ["0", "-1", "", None, True, "1e5", "NaN", "Infinity", " 5", "５", 0, -3, [], {}]


@pytest.mark.parametrize(("exchange", "symbol", "where"), PRICE_AT, ids=[p[0] for p in PRICE_AT])
@pytest.mark.parametrize("bad", BAD_PRICES, ids=[repr(b) for b in BAD_PRICES])
def test_tickers_refuse_a_price_that_is_not_positive_and_plain(
    exchange: str, symbol: str, where: tuple[Any, ...], bad: Any,
) -> None:
    _, _, market, _, answer, _, _ = BY_NAME[(exchange, symbol)]
    with pytest.raises(TickerError):
        parse_ticker(exchange, symbol, _body(_replace(answer, where, bad)), market)


@pytest.mark.parametrize("raw", [b"NaN", b"[1,2,3,4,5,6,NaN,8,9,10]", b"[1,2,3,4,5,6,Infinity,8,9,10]",
                                 b"[1,2,3,4,5,6,-Infinity,8,9,10]", b"\xff", b"", b"null"])
def test_tickers_refuse_non_finite_json_numbers(raw: bytes) -> None:
    with pytest.raises(TickerError):
        parse_ticker("bitfinex", "tBTCUSD", raw)


# A well-formed answer that is for another symbol, an error, several tickers, or another market.
WRONG: list[tuple[str, str, str, Any]] = [
    ("binance", "BTCUSDT", "", BY_NAME[("binance", "LTCBTC")][4]),
    ("binance", "LTCBTC", "", {"code": -1121, "msg": "Invalid symbol."}),
    ("bybit", "BTCUSD", "linear", BY_NAME[("bybit", "BTCUSD")][4]),
    ("bybit", "BTCUSDT", "inverse", BY_NAME[("bybit", "BTCUSD")][4]),
    ("bybit", "BTCUSD", "inverse", _replace(BY_NAME[("bybit", "BTCUSD")][4], ("retCode",), 10001)),
    ("bybit", "BTCUSD", "inverse", _replace(BY_NAME[("bybit", "BTCUSD")][4], ("result", "list"), [])),
    ("okx", "BTC-USDT", "", BY_NAME[("okx", "ETH-BTC")][4]),
    ("okx", "ETH-BTC", "", _replace(BY_NAME[("okx", "ETH-BTC")][4], ("code",), "51001")),
    ("okx", "ETH-BTC", "", _replace(BY_NAME[("okx", "ETH-BTC")][4], ("data", 0, "ts"), "")),
    ("bitget", "ETHUSDT", "", BY_NAME[("bitget", "BTCUSDT")][4]),
    ("bitget", "BTCUSDT", "", _replace(BY_NAME[("bitget", "BTCUSDT")][4], ("data",),
                                       BY_NAME[("bitget", "BTCUSDT")][4]["data"] * 2)),
    ("bitstamp", "ethusd", "", BY_NAME[("bitstamp", "btcusd")][4]),
    ("bitstamp", "btcusd", "", {"status": "error", "reason": "Not found"}),
    ("bitfinex", "tBTCUSD", "", ["error", 10020, "symbol: invalid"]),
    ("bitfinex", "tBTCUSD", "", [0.0001, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, None, None, 0]),
    ("kraken", "XBTUSD", "", {"error": ["EQuery:Unknown asset pair"]}),
    ("kraken", "XBTUSD", "", _replace(BY_NAME[("kraken", "XBTUSD")][4], ("result", "XETHZUSD"),
                                      BY_NAME[("kraken", "XBTUSD")][4]["result"]["XXBTZUSD"])),
    ("coinbase", "ETH-USD", "", BY_NAME[("coinbase", "BTC-USD")][4]),
    ("deribit", "ETH-PERPETUAL", "", BY_NAME[("deribit", "BTC-PERPETUAL")][4]),
    ("deribit", "BTC-PERPETUAL", "", _replace(BY_NAME[("deribit", "BTC-PERPETUAL")][4],
                                              ("result", "state"), "closed")),
    ("deribit", "BTC-PERPETUAL", "", {"jsonrpc": "2.0", "error": {"code": 10009, "message": "x"}}),
]


@pytest.mark.parametrize(("exchange", "symbol", "market", "answer"), WRONG,
                         ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)])
def test_tickers_refuse_an_answer_for_anything_else(exchange: str, symbol: str, market: str, answer: Any) -> None:
    with pytest.raises(TickerError):
        parse_ticker(exchange, symbol, _body(answer), market)


@pytest.mark.parametrize(("exchange", "symbol", "market"), [
    ("binance", "BTC USDT", ""), ("binance", "BTCUSDT&x=1", ""), ("okx", "../x", ""),
    ("bitstamp", "BTCUSD", ""), ("bitfinex", "BTCUSD", ""), ("bitfinex", "fUSD", ""),
    ("kraken", "xbt/usd", ""), ("coinbase", "BTC-USD/../x", ""), ("deribit", "BTC-PERPETUAL?x", ""),
    ("bybit", "BTCUSDT", ""), ("bybit", "BTCUSDT", "?"), ("bybit", "BTCUSDT", "margin"),
    ("nosuch", "BTCUSDT", ""),
])
def test_tickers_no_request_for_a_symbol_or_market_they_cannot_name(exchange: str, symbol: str, market: str) -> None:
    with pytest.raises(TickerError):
        ticker_request(exchange, symbol, market)


def _bybit_order(body: str) -> Any:
    return BYBIT.prepare(Inbound("POST", "/v5/order/create", b"",
                                 (("content-type", "application/json"),), body.encode()))


def test_tickers_bybit_market_is_the_order_category() -> None:
    linear = _bybit_order('{"category":"linear","symbol":"BTCUSDT","side":"Buy","orderType":"Limit",'
                          '"qty":"0.1","price":"50000"}')
    spot = _bybit_order('{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit",'
                        '"qty":"0.1","price":"50000"}')
    assert ticker_market("bybit", linear) == "linear"
    assert ticker_market("bybit", spot) == "spot"
    assert ticker_market("okx", spot) == ""


# ---------------------------------------------------------------- the fetch


class Sender:
    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body, self.status = body, status
        self.calls: list[tuple[str, Outbound]] = []

    async def send(self, base_url: str, out: Outbound) -> UpstreamResponse:
        self.calls.append((base_url, out))
        return UpstreamResponse(self.status, (), self.body, 1.0)


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


OKX_ANSWER = BY_NAME[("okx", "ETH-BTC")][4]
OKX_AT = 1621440583784


@pytest.mark.parametrize(("wall_ms", "fresh"), [
    (OKX_AT, True), (OKX_AT + 59_000, True), (OKX_AT - 59_000, True),
    (OKX_AT + 61_000, False), (OKX_AT - 61_000, False), (OKX_AT + 86_400_000, False),
])
def test_reference_prices_refuse_a_stale_quote(wall_ms: int, fresh: bool) -> None:
    prices = ReferencePrices(Sender(_body(OKX_ANSWER)), wall_ms=lambda: wall_ms)
    got = asyncio.run(prices.get(Named("okx"), "http://x", "ETH-BTC"))
    assert got == (Decimal("0.07319") if fresh else None)


def test_reference_prices_every_exchange_through_the_fetch() -> None:
    for exchange, symbol, market, path, answer, price, at in DOCUMENTED:
        sender = Sender(_body(answer))
        prices = ReferencePrices(sender, wall_ms=lambda at=at: at or 0)  # type: ignore[misc]
        got = asyncio.run(prices.prices(Named(exchange), "http://ex", [symbol], market))
        assert got == {symbol: Decimal(price)}, exchange
        assert [(u, o.path_and_query) for u, o in sender.calls] == [("http://ex", path)]


def test_reference_prices_cache_is_per_market() -> None:
    answer = BY_NAME[("bybit", "BTCUSD")][4]
    sender = Sender(_body(answer))
    prices = ReferencePrices(sender, wall_ms=lambda: 1672376496682)

    async def run() -> tuple[Decimal | None, Decimal | None, Decimal | None]:
        inverse = await prices.get(Named("bybit"), "http://x", "BTCUSD", "inverse")
        again = await prices.get(Named("bybit"), "http://x", "BTCUSD", "inverse")
        linear = await prices.get(Named("bybit"), "http://x", "BTCUSD", "linear")  # answer says inverse
        return inverse, again, linear

    assert asyncio.run(run()) == (Decimal("16597.00"), Decimal("16597.00"), None)
    assert len(sender.calls) == 2


def test_reference_prices_unknown_exchange_is_no_price() -> None:
    sender = Sender(b"{}")
    assert asyncio.run(ReferencePrices(sender).get(Named("nosuch"), "http://x", "BTCUSDT")) is None
    assert sender.calls == []
