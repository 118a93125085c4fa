"""Each exchange's order id comes from its own answer field (issue 19).

The answers are the exchanges' documented examples (as quoted in their API docs and in ccxt's
create_order / create_orders comments), trimmed to the fields around the id. The expected id is
read off the example by hand, never produced by the code under test.
"""

from __future__ import annotations

import json

import pytest

from proxy import exchanges
from proxy.exchanges.order_ids import OrderIds
from proxy.pipeline.decision import exchange_order_ids

BITFINEX_ORDER = [30630788061, None, 1567590617439, "tBTCUSD", 1567590617439, 1567590617439, 0.001,
                  0.001, "LIMIT", None, None, None, 0, "ACTIVE", None, None, 15, 0, 0, 0, None, None,
                  None, 0, None, None, None, None, "API>BFX", None, None, None]

SINGLE = {
    "binance": ({"symbol": "BTCUSDT", "orderId": 28, "orderListId": -1,
                 "clientOrderId": "6gCrw2kRUAF9CvJDGP16IP", "transactTime": 1507725176595}, "28"),
    "bybit": ({"retCode": 0, "retMsg": "OK", "result": {
        "orderId": "1321003749386327552", "orderLinkId": "spot-test-postonly"},
        "retExtInfo": {}, "time": 1672211918471}, "1321003749386327552"),
    "okx": ({"code": "0", "msg": "", "data": [{"clOrdId": "oktswap6", "ordId": "312269865356374016",
                                               "tag": "", "sCode": "0", "sMsg": ""}]},
            "312269865356374016"),
    "bitget": ({"code": "00000", "msg": "success", "requestTime": 1695808949356,
                "data": {"orderId": "1001", "clientOid": "121211212122"}}, "1001"),
    "bitstamp": ({"id": "1234123412341234", "datetime": "2022-01-31 14:43:15.796000", "type": "0",
                  "price": "100.00", "amount": "0.01", "client_order_id": "123456789"},
                 "1234123412341234"),
    "bitfinex": ([1567590617.442, "on-req", None, None, [BITFINEX_ORDER], None, "SUCCESS",
                  "Submitting 1 orders."], "30630788061"),
    "kraken": ({"error": [], "result": {"descr": {"order": "buy 1.25000000 XBTUSD @ limit 27500.0"},
                                        "txid": ["OU22CG-KLAF2-FWUDD7"]}}, "OU22CG-KLAF2-FWUDD7"),
    "coinbase": ({"success": True, "success_response": {
        "order_id": "11111-00000-000000", "product_id": "BTC-USD", "side": "BUY",
        "client_order_id": "0000-00000-000000"}}, "11111-00000-000000"),
    # The JSON-RPC "id" (5275) is the request's; the order's id is result.order.order_id.
    "deribit": ({"jsonrpc": "2.0", "id": 5275, "result": {
        "trades": [{"trade_id": "ETH-37435", "order_id": "ETH-349249", "amount": 40}],
        "order": {"order_id": "ETH-349249", "order_state": "filled", "label": "market0000234",
                  "instrument_name": "ETH-PERPETUAL", "amount": 40}}}, "ETH-349249"),
}

BATCH = {
    "bybit": ({"retCode": 0, "result": {"list": [
        {"category": "spot", "symbol": "BTCUSDT", "orderId": "1666800494330512128",
         "orderLinkId": "spot-btc-03"},
        {"category": "spot", "symbol": "ATOMUSDT", "orderId": "1666800494330512129",
         "orderLinkId": "spot-atom-03"}]},
        "retExtInfo": {"list": [{"code": 0, "msg": "OK"}, {"code": 0, "msg": "OK"}]}},
        ("1666800494330512128", "1666800494330512129")),
    "okx": ({"code": "0", "data": [{"clOrdId": "a1", "ordId": "12345689", "sCode": "0"},
                                   {"clOrdId": "a2", "ordId": "12344", "sCode": "0"}]},
            ("12345689", "12344")),
    "bitget": ({"code": "00000", "data": {
        "successList": [{"orderId": "1111397214281175046", "clientOid": "c1"}],
        "failureList": [{"orderId": "", "clientOid": "c2", "errorMsg": "insufficient balance"}]}},
        ("1111397214281175046",)),
    "bitfinex": ([1706762515553, "ox_multi-req", None, None, [
        [1706762515, "on-req", None, None, [[139567428547, None, 1706762515551, "tBTCUST"]], None,
         "SUCCESS", "Submitting 1 orders."]], None, "SUCCESS", "Submitting 2 order operations."],
        ("139567428547",)),
    "kraken": ({"error": [], "result": {"orders": [
        {"txid": "OEPPJX-34RMM-OROGZE", "descr": {"order": "sell 6.000000 ADAUSDC @ limit 0.4"}},
        {"txid": "OLQY7O-OYBXW-W23PGL", "descr": {"order": "sell 6.000000 ADAUSDC @ limit 0.4"}}]}},
        ("OEPPJX-34RMM-OROGZE", "OLQY7O-OYBXW-W23PGL")),
}


def _body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_every_exchange_declares_where_its_order_id_is() -> None:
    for name in exchanges.NAMES:
        assert isinstance(exchanges.get(name).capabilities.order_ids, OrderIds), name
    assert set(SINGLE) == set(exchanges.NAMES)


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_order_id_from_the_exchanges_own_field(name: str) -> None:
    answer, expected = SINGLE[name]
    assert exchange_order_ids(name, _body(answer)) == (expected,)


@pytest.mark.parametrize("name", sorted(BATCH))
def test_batch_order_ids_in_order(name: str) -> None:
    answer, expected = BATCH[name]
    assert exchange_order_ids(name, _body(answer), batch=True) == expected


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_no_order_id_from_an_error_or_a_foreign_shape(name: str) -> None:
    for body in (b"not json", b"{}", b"[]", _body({"id": 7, "orderId": None, "result": None}),
                 _body({"success": False, "error_response": {"error": "INSUFFICIENT_FUND"}})):
        if name == "bitstamp" and b'"id": 7' in body:
            continue  # Bitstamp's answer is the order itself: a top-level id is its id
        assert exchange_order_ids(name, body) == (), body


def test_deribit_never_records_the_json_rpc_request_id() -> None:
    answer = {"jsonrpc": "2.0", "id": 5275, "result": {"order": {"order_state": "open"}}}
    assert exchange_order_ids("deribit", _body(answer)) == ()


def test_an_unknown_exchange_records_no_order_id() -> None:
    assert exchange_order_ids("nowhere", _body({"orderId": 1})) == ()
    assert exchange_order_ids(None, _body({"orderId": 1})) == ()
