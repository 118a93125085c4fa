"""Each exchange module's instrument reader and alias resolution, on answers shaped as the
exchanges document them (issue 12, cases 4 and 6). Any doubt is an InstrumentError."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from proxy.errors import InstrumentError
from proxy.exchanges.bybit import EXCHANGE as BYBIT
from proxy.exchanges.coinbase import EXCHANGE as COINBASE
from proxy.exchanges.kraken import EXCHANGE as KRAKEN
from proxy.exchanges.okx import EXCHANGE as OKX
from proxy.exchanges.okx import instrument_type


def _okx(inst: str, kind: str, ct_type: str, ct_val: str, ct_ccy: str, mult: str = "1") -> bytes:
    return json.dumps({"code": "0", "msg": "", "data": [{
        "instId": inst, "instType": kind, "ctType": ct_type, "ctVal": ct_val, "ctMult": mult,
        "ctValCcy": ct_ccy, "settleCcy": "USDT", "state": "live", "lotSz": "1"}]}).encode()


def test_okx_contract_sizes_from_ctval_and_ctmult() -> None:
    doge = OKX.parse_instrument("DOGE-USDT-SWAP", "SWAP", _okx("DOGE-USDT-SWAP", "SWAP", "linear", "1000", "DOGE"))
    assert doge.kind == "linear" and doge.contract_size == Decimal(1000)
    assert doge.notional(Decimal(100), Decimal("0.1")) == Decimal("10000.0")
    btc = OKX.parse_instrument("BTC-USD-SWAP", "SWAP", _okx("BTC-USD-SWAP", "SWAP", "inverse", "100", "USD"))
    assert btc.kind == "inverse" and btc.notional(Decimal(3), Decimal(1)) == Decimal(300)
    futures = OKX.parse_instrument("BTC-USD-250328", "FUTURES",
                                   _okx("BTC-USD-250328", "FUTURES", "inverse", "100", "USD", "2"))
    assert futures.contract_size == Decimal(200)


@pytest.mark.parametrize("answer", [
    _okx("ETH-USDT-SWAP", "SWAP", "linear", "0.1", "ETH"),       # another instrument
    _okx("DOGE-USDT-SWAP", "FUTURES", "linear", "1000", "DOGE"),  # another type
    _okx("DOGE-USDT-SWAP", "SWAP", "linear", "1000", "USDT"),     # linear sized in the quote?
    _okx("DOGE-USDT-SWAP", "SWAP", "inverse", "1000", "DOGE"),    # inverse sized in the base?
    _okx("DOGE-USDT-SWAP", "SWAP", "linear", "0", "DOGE"),        # not positive
    _okx("DOGE-USDT-SWAP", "SWAP", "linear", "1e3", "DOGE"),      # not a plain decimal
    _okx("DOGE-USDT-SWAP", "SWAP", "linear", "", "DOGE"),         # missing
    b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}',
    b'{"code":"0","data":[]}',
    b"not json",
])
def test_okx_any_doubt_is_refused(answer: bytes) -> None:
    with pytest.raises(InstrumentError):
        OKX.parse_instrument("DOGE-USDT-SWAP", "SWAP", answer)


def test_okx_instrument_types_from_the_documented_id_shapes() -> None:
    assert [instrument_type(i) for i in ("BTC-USDT", "BTC-USD-SWAP", "BTC-USD-250328",
                                         "BTC-USD-250328-50000-C", "BTC-USD-X")] == \
        ["SPOT", "SWAP", "FUTURES", "OPTION", ""]
    out = OKX.instrument_request("DOGE-USDT-SWAP", "SWAP")
    assert out.path_and_query == "/api/v5/public/instruments?instType=SWAP&instId=DOGE-USDT-SWAP"
    with pytest.raises(InstrumentError):
        OKX.instrument_request("BTC-USD-250328-50000-C", "OPTION")


def _bybit(category: str, symbol: str, contract: str, status: str = "Trading") -> bytes:
    return json.dumps({"retCode": 0, "retMsg": "OK", "result": {"category": category, "list": [{
        "symbol": symbol, "contractType": contract, "status": status, "baseCoin": "BTC",
        "quoteCoin": "USD"}], "nextPageCursor": ""}, "time": 1}).encode()


def test_bybit_linear_counts_base_inverse_counts_usd() -> None:
    linear = BYBIT.parse_instrument("BTCUSDT", "linear", _bybit("linear", "BTCUSDT", "LinearPerpetual"))
    inverse = BYBIT.parse_instrument("BTCUSD", "inverse", _bybit("inverse", "BTCUSD", "InverseFutures"))
    assert linear.notional(Decimal("0.5"), Decimal(50000)) == Decimal("25000.0")
    assert inverse.notional(Decimal(25000), Decimal(1)) == Decimal(25000)
    for answer in (_bybit("linear", "BTCUSDT", "InversePerpetual"), _bybit("inverse", "BTCUSDT", "LinearPerpetual"),
                   _bybit("linear", "BTCUSDT", "LinearPerpetual", "Closed"),
                   _bybit("linear", "ETHUSDT", "LinearPerpetual")):
        with pytest.raises(InstrumentError):
            BYBIT.parse_instrument("BTCUSDT", "linear", answer)


def _coinbase(product: str, kind: str, details: dict[str, Any] | None) -> bytes:
    return json.dumps({"product_id": product, "product_type": kind, "price": "50000",
                       "future_product_details": details}).encode()


def test_coinbase_futures_count_contracts_of_contract_size() -> None:
    bit = COINBASE.parse_instrument("BIT-26DEC25-CDE", "FUTURE", _coinbase(
        "BIT-26DEC25-CDE", "FUTURE", {"contract_size": "0.01", "contract_root_unit": "BTC"}))
    assert bit.notional(Decimal(10), Decimal(50000)) == Decimal("5000.00")
    for answer in (_coinbase("BIT-26DEC25-CDE", "SPOT", None), _coinbase("BIT-26DEC25-CDE", "FUTURE", {}),
                   _coinbase("ET-26DEC25-CDE", "FUTURE", {"contract_size": "0.1"})):
        with pytest.raises(InstrumentError):
            COINBASE.parse_instrument("BIT-26DEC25-CDE", "FUTURE", answer)


def test_kraken_pair_aliases_resolve_to_one_market() -> None:
    same = {KRAKEN.canonical_symbol(p) for p in ("XXBTZUSD", "XBTUSD", "BTCUSD", "xbtusd")}
    assert same == {"XBTUSD"}
    assert KRAKEN.canonical_symbol("XETHXXBT") == KRAKEN.canonical_symbol("ETHXBT") == "ETHXBT"
    assert KRAKEN.canonical_symbol("XDGUSD") == KRAKEN.canonical_symbol("DOGEUSD") == "XDGUSD"
    assert KRAKEN.canonical_symbol("XETHZEUR") == "ETHEUR"
    assert KRAKEN.canonical_symbol("SOLUSD") == "SOLUSD"  # no alias: as written
