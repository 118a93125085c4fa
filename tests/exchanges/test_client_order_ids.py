"""Injected client order ids fit each exchange's documented rules, and order lookups ask the
right question and read the answers right (answers written by hand from the exchanges' docs)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from proxy.exchanges import binance, bitfinex, bitget, bitstamp, bybit, coinbase, deribit, kraken, okx
from proxy.exchanges.client_order_ids import ClientOrderIdRules, Lookup, make_client_order_id
from proxy.model.request import Inbound
from proxy.pipeline.lookup import content_digest, inject

FORM = (("content-type", "application/x-www-form-urlencoded"),)
JSON = (("content-type", "application/json"),)


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


#: exchange, an order without an id, the id's rule as the exchange documents it (SPECS.md)
CASES: list[tuple[Any, Inbound, str]] = [
    (binance.EXCHANGE, Inbound("POST", "/api/v3/order", b"", FORM,
                               b"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=50000"),
     r"[a-zA-Z0-9\-_]{1,36}"),
    (bybit.EXCHANGE, Inbound("POST", "/v5/order/create", b"", JSON, _json({
        "category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01",
        "price": "50000"})), r"[A-Za-z0-9\-_]{1,36}"),
    (okx.EXCHANGE, Inbound("POST", "/api/v5/trade/order", b"", JSON, _json({
        "instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "0.01",
        "px": "50000"})), r"[A-Za-z0-9]{1,32}"),
    (bitget.EXCHANGE, Inbound("POST", "/api/v2/spot/trade/place-order", b"", JSON, _json({
        "symbol": "BTCUSDT", "side": "buy", "orderType": "limit", "force": "gtc", "price": "50000",
        "size": "0.01"})), r"[0-9a-zA-Z\-+_#]{1,49}"),
    (bitstamp.EXCHANGE, Inbound("POST", "/api/v2/buy/btcusd/", b"", FORM, b"amount=0.01&price=50000"),
     r"[A-Za-z0-9_\-]{1,180}"),
    (kraken.EXCHANGE, Inbound("POST", "/0/private/AddOrder", b"", FORM,
                              b"pair=XBTUSD&type=buy&ordertype=limit&volume=0.01&price=50000"),
     r"[\x20-\x7e]{1,18}"),  # free text: at most 18 characters
    (deribit.EXCHANGE, Inbound("GET", "/api/v2/private/buy",
                               b"instrument_name=BTC-PERPETUAL&amount=10&type=limit&price=50000", (), b""),
     r"[\x21-\x7e]{1,64}"),
]


@pytest.mark.parametrize(("exchange", "inbound", "rule"), CASES, ids=lambda c: getattr(c, "name", ""))
def test_client_order_ids_injected_id_fits_the_exchange_and_is_sent(exchange: Any, inbound: Inbound, rule: str) -> None:
    prepared = exchange.prepare(inbound)
    assert prepared.client_order_id is None
    changed, coid = inject(exchange, prepared, "momentum-bot", uuid.uuid4().hex)
    assert coid is not None and re.fullmatch(rule, coid), coid
    assert coid.startswith("momen")
    assert changed.client_order_id == coid and changed.intents[0].client_order_id == coid
    rules = exchange.capabilities.client_order_ids
    assert rules is not None
    field = rules.field
    sent = changed.query + "&" + changed.body.decode()
    assert f"{field}={coid}" in sent or f'"{field}":"{coid}"' in sent
    # everything else is unchanged
    assert changed.intents[0].symbol == prepared.intents[0].symbol
    assert changed.intents[0].quantity == prepared.intents[0].quantity


def test_client_order_ids_bitfinex_cid_is_an_integer() -> None:
    prepared = bitfinex.EXCHANGE.prepare(Inbound("POST", "/v2/auth/w/order/submit", b"", JSON, _json({
        "type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "0.01", "price": "50000"})))
    changed, coid = inject(bitfinex.EXCHANGE, prepared, "bot", uuid.uuid4().hex)
    assert coid is not None and coid.isdigit() and 0 < int(coid) < 2**45
    assert json.loads(changed.body)["cid"] == int(coid)


def test_client_order_ids_not_injected_when_sent_or_for_batches_or_with_kraken_userref() -> None:
    own = binance.EXCHANGE.prepare(Inbound("POST", "/api/v3/order", b"", FORM,
                                           b"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.01&newClientOrderId=mine"))
    assert inject(binance.EXCHANGE, own, "bot", uuid.uuid4().hex) == (own, None)
    userref = kraken.EXCHANGE.prepare(Inbound("POST", "/0/private/AddOrder", b"", FORM,
                                              b"pair=XBTUSD&type=buy&ordertype=market&volume=0.01&userref=7"))
    assert inject(kraken.EXCHANGE, userref, "bot", uuid.uuid4().hex) == (userref, None)
    read = binance.EXCHANGE.prepare(Inbound("GET", "/api/v3/account", b"", (), b""))
    assert inject(binance.EXCHANGE, read, "bot", uuid.uuid4().hex) == (read, None)


def test_client_order_ids_differ_per_token_and_keep_a_sanitised_prefix() -> None:
    rules = ClientOrderIdRules("x", 32, separator="")
    ids = {make_client_order_id(rules, "bot", uuid.uuid4().hex) for _ in range(200)}
    assert len(ids) == 200
    assert make_client_order_id(rules, "a b/c", "ff").startswith("abc")
    assert make_client_order_id(rules, "---", "ff").startswith("px")
    short = ClientOrderIdRules("x", 18)
    made = make_client_order_id(short, "averyveryverylongclientname", uuid.uuid4().hex)
    assert len(made) == 18 and made.startswith("avery-")


def test_client_order_ids_content_digest_ignores_parameter_order() -> None:
    a = binance.EXCHANGE.prepare(Inbound("POST", "/api/v3/order", b"", FORM,
                                         b"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.01&newClientOrderId=x"))
    b = binance.EXCHANGE.prepare(Inbound("POST", "/api/v3/order", b"newClientOrderId=x", FORM,
                                         b"quantity=0.01&type=MARKET&side=BUY&symbol=BTCUSDT"))
    c = binance.EXCHANGE.prepare(Inbound("POST", "/api/v3/order", b"", FORM,
                                         b"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.02&newClientOrderId=x"))
    assert content_digest(a) == content_digest(b) != content_digest(c)


def _placed(exchange: Any, inbound: Inbound) -> Any:
    prepared, coid = inject(exchange, exchange.prepare(inbound), "bot", uuid.uuid4().hex)
    assert coid is not None
    return prepared, coid


def test_client_order_ids_binance_lookup_by_orig_client_order_id() -> None:
    prepared, coid = _placed(binance.EXCHANGE, CASES[0][1])
    (lookup,) = binance.EXCHANGE.order_lookups(prepared)
    assert (lookup.method, lookup.path) == ("GET", "/api/v3/order")
    assert lookup.query == f"symbol=BTCUSDT&origClientOrderId={coid}"
    result = binance.EXCHANGE.lookup_result
    assert result(200, b'{"symbol":"BTCUSDT","orderId":1,"clientOrderId":"x","status":"NEW"}') is Lookup.FOUND
    assert result(400, b'{"code":-2013,"msg":"Order does not exist."}') is Lookup.ABSENT
    assert result(400, b'{"code":-1021,"msg":"Timestamp outside of the recvWindow."}') is Lookup.UNKNOWN
    assert result(502, b"<html>bad gateway</html>") is Lookup.UNKNOWN


def test_client_order_ids_bybit_lookup_by_order_link_id() -> None:
    prepared, coid = _placed(bybit.EXCHANGE, CASES[1][1])
    (lookup,) = bybit.EXCHANGE.order_lookups(prepared)
    assert (lookup.method, lookup.path) == ("GET", "/v5/order/realtime")
    assert lookup.query == f"category=spot&symbol=BTCUSDT&orderLinkId={coid}"
    result = bybit.EXCHANGE.lookup_result
    assert result(200, b'{"retCode":0,"retMsg":"OK","result":{"list":[{"orderId":"1"}]}}') is Lookup.FOUND
    assert result(200, b'{"retCode":0,"retMsg":"OK","result":{"list":[]}}') is Lookup.ABSENT
    assert result(200, b'{"retCode":10002,"retMsg":"invalid request","result":{}}') is Lookup.UNKNOWN


def test_client_order_ids_okx_lookup_by_cl_ord_id() -> None:
    prepared, coid = _placed(okx.EXCHANGE, CASES[2][1])
    (lookup,) = okx.EXCHANGE.order_lookups(prepared)
    assert (lookup.method, lookup.path) == ("GET", "/api/v5/trade/order")
    assert lookup.query == f"instId=BTC-USDT&clOrdId={coid}"
    result = okx.EXCHANGE.lookup_result
    assert result(200, b'{"code":"0","msg":"","data":[{"ordId":"1"}]}') is Lookup.FOUND
    assert result(200, b'{"code":"51603","msg":"Order does not exist","data":[]}') is Lookup.ABSENT
    assert result(200, b'{"code":"50011","msg":"Too Many Requests","data":[]}') is Lookup.UNKNOWN


def test_client_order_ids_kraken_lookup_asks_open_then_closed_orders() -> None:
    prepared, coid = _placed(kraken.EXCHANGE, CASES[5][1])
    lookups = kraken.EXCHANGE.order_lookups(prepared)
    assert [lk.path for lk in lookups] == ["/0/private/OpenOrders", "/0/private/ClosedOrders"]
    assert all(lk.body == f"cl_ord_id={coid}".encode() for lk in lookups)
    result = kraken.EXCHANGE.lookup_result
    assert result(200, b'{"error":[],"result":{"open":{"OABC-1":{"status":"open"}}}}') is Lookup.FOUND
    assert result(200, b'{"error":[],"result":{"closed":{},"count":0}}') is Lookup.ABSENT
    assert result(200, b'{"error":["EAPI:Invalid nonce"]}') is Lookup.UNKNOWN


def test_client_order_ids_deribit_lookup_by_label_in_the_settlement_currency() -> None:
    prepared, coid = _placed(deribit.EXCHANGE, CASES[6][1])
    (lookup,) = deribit.EXCHANGE.order_lookups(prepared)
    assert lookup.path == "/api/v2/private/get_order_state_by_label"
    assert lookup.query == f"currency=BTC&label={coid}"
    result = deribit.EXCHANGE.lookup_result
    assert result(200, b'{"jsonrpc":"2.0","result":[{"order_id":"1"}]}') is Lookup.FOUND
    assert result(200, b'{"jsonrpc":"2.0","result":[]}') is Lookup.ABSENT
    assert result(400, b'{"jsonrpc":"2.0","error":{"code":10009,"message":"not_enough_funds"}}') is Lookup.UNKNOWN


def test_client_order_ids_coinbase_lookup_is_the_idempotent_placement() -> None:
    order = {"client_order_id": "bot-1", "product_id": "BTC-USD", "side": "BUY",
             "order_configuration": {"limit_limit_gtc": {"base_size": "0.01", "limit_price": "50000"}}}
    prepared = coinbase.EXCHANGE.prepare(Inbound("POST", "/api/v3/brokerage/orders", b"", JSON, _json(order)))
    assert coinbase.EXCHANGE.order_lookups(prepared) == (prepared,)
    assert coinbase.EXCHANGE.lookup_result(200, b'{"success":true,"success_response":{}}') is Lookup.FOUND
    assert coinbase.EXCHANGE.lookup_result(500, b'{"error":"INTERNAL"}') is Lookup.UNKNOWN


def test_client_order_ids_bitget_lookup_by_client_oid() -> None:
    prepared, coid = _placed(bitget.EXCHANGE, CASES[3][1])
    (lookup,) = bitget.EXCHANGE.order_lookups(prepared)
    assert (lookup.method, lookup.path, lookup.query) == ("GET", "/api/v2/spot/trade/orderInfo", f"clientOid={coid}")
    result = bitget.EXCHANGE.lookup_result
    found = {"code": "00000", "msg": "success", "data": [{"orderId": "1", "clientOid": coid, "status": "live"}]}
    assert result(200, _json(found)) is Lookup.FOUND
    assert result(200, _json({"code": "00000", "msg": "success", "data": []})) is Lookup.ABSENT
    assert result(400, _json({"code": "43001", "msg": "The order does not exist", "data": None})) is Lookup.ABSENT
    assert result(400, _json({"code": "40008", "msg": "Request timestamp expired", "data": None})) is Lookup.UNKNOWN
    assert result(502, b"<html>bad gateway</html>") is Lookup.UNKNOWN


def test_client_order_ids_bitstamp_lookup_by_order_status() -> None:
    prepared, coid = _placed(bitstamp.EXCHANGE, CASES[4][1])
    (lookup,) = bitstamp.EXCHANGE.order_lookups(prepared)
    assert (lookup.method, lookup.path, lookup.body) == (
        "POST", "/api/v2/order_status/", f"client_order_id={coid}".encode())
    result = bitstamp.EXCHANGE.lookup_result
    assert result(200, _json({"id": 1, "status": "Open", "client_order_id": coid, "transactions": []})) is Lookup.FOUND
    not_found = {"status": "error", "reason": {"__all__": ["Order not found."]}, "response_code": "404.002"}
    assert result(400, _json(not_found)) is Lookup.ABSENT
    assert result(403, _json({"status": "error", "reason": "Invalid signature", "code": "API0005"})) is Lookup.UNKNOWN
    assert result(502, b"<html>bad gateway</html>") is Lookup.UNKNOWN


def test_client_order_ids_bitfinex_lookup_reads_active_then_closed_and_matches_cid_and_order() -> None:
    inbound = Inbound("POST", "/v2/auth/w/order/submit", b"", JSON, _json({
        "type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "-0.5", "price": "50000", "cid": 77}))
    prepared = bitfinex.EXCHANGE.prepare(inbound)
    active, closed = bitfinex.EXCHANGE.order_lookups(prepared)
    assert (active.path, active.body) == ("/v2/auth/r/orders/tBTCUSD", b"{}")
    assert (closed.path, json.loads(closed.body)) == ("/v2/auth/r/orders/tBTCUSD/hist", {"limit": 2500})

    def row(oid: int, cid: int, symbol: str, amount_orig: float) -> list[Any]:
        return [oid, None, cid, symbol, 1, 1, 0, amount_orig, "EXCHANGE LIMIT", *[None] * 23]

    judge = bitfinex.EXCHANGE.lookup_result_for
    mine, other = row(9, 77, "tBTCUSD", -0.5), row(8, 5, "tBTCUSD", 1.0)
    outcome, shown = judge(prepared, 200, _json_list([other, mine]))
    assert outcome is Lookup.FOUND and json.loads(shown) == [mine]  # never the other orders
    # the same cid on another day's order (other amount, or other symbol) is not this order
    assert judge(prepared, 200, _json_list([row(7, 77, "tBTCUSD", 0.5), row(6, 77, "tETHUSD", -0.5)]))[0] \
        is Lookup.ABSENT
    assert judge(prepared, 200, b"[]")[0] is Lookup.ABSENT
    full = [row(i, 1000 + i, "tBTCUSD", 1.0) for i in range(2500)]  # a full page may be cut short
    assert judge(prepared, 200, _json_list(full))[0] is Lookup.UNKNOWN
    assert judge(prepared, 500, b'["error",10114,"nonce: small"]')[0] is Lookup.UNKNOWN
    assert bitfinex.EXCHANGE.lookup_result(200, b"[]") is Lookup.UNKNOWN  # needs the order


def _json_list(rows: list[Any]) -> bytes:
    return json.dumps(rows).encode()


def test_client_order_ids_batch_gets_one_id_per_missing_order_in_batch_order() -> None:
    from proxy.pipeline.lookup import batch_scope, inject_batch

    orders = [{"symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": q, "price": "50000"}
              for q in ("0.01", "0.02", "0.03")]
    orders[1]["orderLinkId"] = "mine-1"
    prepared = bybit.EXCHANGE.prepare(Inbound("POST", "/v5/order/create-batch", b"", JSON,
                                              _json({"category": "spot", "request": orders})))
    changed, header = inject_batch(bybit.EXCHANGE, prepared, "bot", uuid.uuid4().hex)
    assert header is not None
    ids = header.split(",")
    body = json.loads(changed.body)["request"]
    assert [o.get("orderLinkId") for o in body] == ids and ids[1] == "mine-1"
    assert [o["qty"] for o in body] == ["0.01", "0.02", "0.03"]  # nothing else changed
    assert len(set(ids)) == 3 and all(re.fullmatch(r"[A-Za-z0-9\-_]{1,36}", c) for c in ids)
    # the batch's record is its set of ids, whatever their order; no single id can name it
    assert batch_scope("bot", "a", ids) == batch_scope("bot", "a", list(reversed(ids)))
    assert "\n" in batch_scope("bot", "a", ids).client_order_id


def test_client_order_ids_bitfinex_batch_ids_are_integers() -> None:
    from proxy.pipeline.lookup import inject_batch

    ops = [["on", {"type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": a, "price": "50000"}]
           for a in ("0.1", "-0.2")]
    prepared = bitfinex.EXCHANGE.prepare(Inbound("POST", "/v2/auth/w/order/multi", b"", JSON, _json({"ops": ops})))
    changed, header = inject_batch(bitfinex.EXCHANGE, prepared, "bot", uuid.uuid4().hex)
    assert header is not None
    cids = [op[1]["cid"] for op in json.loads(changed.body)["ops"]]
    assert all(isinstance(c, int) and 0 < c < 2**45 for c in cids)
    assert header == ",".join(str(c) for c in cids)


def test_client_order_ids_batch_refused_when_ids_cannot_be_added_or_repeat() -> None:
    from proxy.errors import BadRequest
    from proxy.pipeline.lookup import inject_batch

    kraken_batch = _json({"pair": "XBTUSD", "orders": [
        {"type": "buy", "ordertype": "limit", "volume": "0.01", "price": "50000"}]})
    prepared = kraken.EXCHANGE.prepare(Inbound("POST", "/0/private/AddOrderBatch", b"", JSON, kraken_batch))
    with pytest.raises(BadRequest, match="cl_ord_id"):
        inject_batch(kraken.EXCHANGE, prepared, "bot", uuid.uuid4().hex)
    twice = [{"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "0.01",
              "px": "50000", "clOrdId": "same1"}] * 2
    prepared = okx.EXCHANGE.prepare(Inbound("POST", "/api/v5/trade/batch-orders", b"", JSON, json.dumps(twice).encode()))
    with pytest.raises(BadRequest, match="its own client order id"):
        inject_batch(okx.EXCHANGE, prepared, "bot", uuid.uuid4().hex)
