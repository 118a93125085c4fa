"""Injected client order ids fit each exchange's documented rules, and order lookups ask the
right question and read the answers right (answers written by hand from the exchanges' docs)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from proxy.errors import BadRequest
from proxy.exchanges import binance, bitfinex, bitget, bitstamp, bybit, coinbase, deribit, kraken, okx
from proxy.exchanges.client_order_ids import (
    ClientOrderIdRules,
    Lookup,
    inbound_with,
    make_client_order_id,
    member_appended,
    pair_appended,
)
from proxy.model.request import Inbound, Stamp
from proxy.pipeline.lookup import content_digest, earlier_digests, inject
from tests.policy.test_sent_equals_checked import CREDS, EXCHANGES, HOSTS, from_intent

FORM = (("content-type", "application/x-www-form-urlencoded"),)
JSON = (("content-type", "application/json"),)


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode()


#: exchange, an order without an id, the id's rule as the exchange documents it (docs/exchanges.md)
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
    # the format is decided once and named in the digest: format 1, written out from its definition
    pairs = sorted([["symbol", "BTCUSDT"], ["side", "BUY"], ["type", "MARKET"], ["quantity", "0.01"],
                    ["newClientOrderId", "x"]])
    text = json.dumps(["POST", "/api/v3/order", pairs, None], sort_keys=True)
    assert content_digest(a) == "1:" + hashlib.sha256(text.encode()).hexdigest()
    assert earlier_digests(content_digest(a)) == (hashlib.sha256(text.encode()).hexdigest(),)
    json_order = bybit.EXCHANGE.prepare(CASES[1][1])
    text = json.dumps(["POST", "/v5/order/create", [], json.loads(CASES[1][1].body)], sort_keys=True)
    assert content_digest(json_order) == "1:" + hashlib.sha256(text.encode()).hexdigest()


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


@pytest.mark.parametrize(("query", "body"), [
    (b"", b"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000"),
    (b"symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.5", b""),
    (b"symbol=ETHUSDT&side=BUY", b"type=MARKET&quoteOrderQty=100"),
    (b"", b"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.00100&price=50000.00"
          b"&newOrderRespType=RESULT"),
])
def test_binance_injects_without_parsing_again_exactly_as_a_reparse(query: bytes, body: bytes) -> None:
    """The id is added to the parsed order (issue: parse each order once); what comes out is
    what parsing the order again with the id in it gives, field for field."""
    from proxy.exchanges.client_order_ids import inbound_with

    headers = (("content-type", "application/x-www-form-urlencoded"),) if body else ()
    prepared = binance.EXCHANGE.prepare(Inbound("POST", "/api/v3/order", query, headers, body))
    coid = "bot-" + uuid.uuid4().hex[:20]
    fast = binance.EXCHANGE.with_client_order_id(prepared, coid)
    assert fast == binance.EXCHANGE.prepare(inbound_with(prepared, "newClientOrderId", coid))
    assert fast.client_order_id == coid


# ---------------------------------------------------------------- parse once: fast path == re-parse
#
# Every exchange that injects ids adds the id to the order it already parsed (issue: parse each
# order once). The independent path is the exchange's own full ``prepare`` of the canonical
# request with the id added (``inbound_with``): what comes out must be equal field for field,
# Decimals to the digit (compared through repr), for orders generated in many shapes.
_amounts = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("100000"), places=8,
                       allow_nan=False, allow_infinity=False).map(lambda d: format(d, "f"))
_sides = st.sampled_from(["buy", "sell"])


def _some(draw: st.DrawFn, options: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """A random subset of optional fields, each with a drawn value."""
    names = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=len(options)))
    return {n: draw(options[n]) for n in names}


def _shuffled(draw: st.DrawFn, fields: dict[str, Any]) -> list[tuple[str, Any]]:
    return draw(st.permutations(list(fields.items())))


def _json_body(draw: st.DrawFn, fields: dict[str, Any]) -> bytes:
    pairs = _shuffled(draw, fields)
    spaced = draw(st.booleans())  # the bot's spacing: the canonical body has none
    return json.dumps(dict(pairs), separators=(", ", ": ") if spaced else (",", ":")).encode()


def _form_body(draw: st.DrawFn, fields: dict[str, str]) -> bytes:
    return "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in _shuffled(draw, fields)).encode()


@st.composite
def bybit_orders(draw: st.DrawFn) -> Inbound:
    market = draw(st.booleans())
    fields: dict[str, Any] = {"category": draw(st.sampled_from(["spot", "linear", "inverse"])),
                              "symbol": draw(st.sampled_from(["BTCUSDT", "ETHUSD", "SOL-26DEC25"])),
                              "side": draw(st.sampled_from(["Buy", "Sell"])),
                              "orderType": "Market" if market else "Limit", "qty": draw(_amounts)}
    if not market:
        fields["price"] = draw(_amounts)
    fields |= _some(draw, {
        "timeInForce": st.sampled_from(["GTC", "IOC", "FOK", "PostOnly"]), "positionIdx": st.integers(0, 2),
        "reduceOnly": st.booleans(), "isLeverage": st.integers(0, 1), "triggerPrice": _amounts,
        "smpType": st.sampled_from(["None", "CancelMaker"]), "timestamp": st.just("1700000000000"),
        "takeProfit": _amounts, "orderFilter": st.just("Order"), "orderLinkId": st.none(),
    })
    return Inbound("POST", "/v5/order/create", b"", JSON, _json_body(draw, fields))


@st.composite
def okx_orders(draw: st.DrawFn) -> Inbound:
    spot, market = draw(st.booleans()), draw(st.booleans())
    fields: dict[str, Any] = {"instId": "BTC-USDT" if spot else "BTC-USDT-SWAP",
                              "tdMode": "cash" if spot else "cross", "side": draw(_sides),
                              "ordType": "market" if market else draw(st.sampled_from(["limit", "post_only", "ioc"])),
                              "sz": draw(_amounts)}
    if not market:
        fields["px"] = draw(_amounts)
    fields |= _some(draw, {
        "tag": st.sampled_from(["bot1", "clOrdId", "A"]),  # clOrdId as a value: falls back, same result
        "reduceOnly": st.booleans(), "ccy": st.just("USDT"), "stpMode": st.just("cancel_maker"),
        "banAmend": st.booleans(), "posSide": st.just("net"),
    })
    return Inbound("POST", "/api/v5/trade/order", b"", JSON, _json_body(draw, fields))


@st.composite
def bitget_orders(draw: st.DrawFn) -> Inbound:
    market = draw(st.booleans())
    fields: dict[str, Any] = {"symbol": draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])), "side": draw(_sides),
                              "orderType": "market" if market else "limit", "size": draw(_amounts)}
    if not market:
        fields["price"] = draw(_amounts)
    fields |= _some(draw, {
        "force": st.sampled_from(["gtc", "post_only", "IOC", "fok"]), "stpMode": st.sampled_from(["none", "cancel_both"]),
        "requestTime": st.just("1700000000000"), "receiveWindow": st.just("5000"),
    })
    return Inbound("POST", "/api/v2/spot/trade/place-order", b"", JSON, _json_body(draw, fields))


@st.composite
def bitstamp_orders(draw: st.DrawFn) -> Inbound:
    side, pair = draw(_sides), draw(st.sampled_from(["btcusd", "ethbtc", "btcusd-perp"]))
    kind = draw(st.sampled_from(["limit", "market", "instant"]))
    fields = {"amount": draw(_amounts)}
    if kind == "limit":
        fields["price"] = draw(_amounts)
        fields |= _some(draw, {"ioc_order": st.sampled_from(["True", "false"]),
                               "daily_order": st.sampled_from(["False", "0"])})
    if kind == "instant" and side == "sell" and draw(st.booleans()):
        fields["amount_in_counter"] = "True"
    path = f"/api/v2/{side}/{pair}/" if kind == "limit" else f"/api/v2/{side}/{kind}/{pair}/"
    return Inbound("POST", path, b"", FORM, _form_body(draw, fields))


@st.composite
def bitfinex_orders(draw: st.DrawFn) -> Inbound:
    kind = draw(st.sampled_from(["LIMIT", "MARKET", "FOK", "IOC", "STOP"]))
    prefix = draw(st.sampled_from(["EXCHANGE ", ""]))
    sign = draw(st.sampled_from(["", "-"]))
    fields: dict[str, Any] = {"type": prefix + kind, "symbol": draw(st.sampled_from(["tBTCUSD", "tTESTBTC:TESTUSD"])),
                              "amount": sign + draw(_amounts)}
    if kind != "MARKET":
        fields["price"] = draw(_amounts)
    fields |= _some(draw, {
        "flags": st.sampled_from([0, 64, 1024, 4096]), "lev": st.integers(1, 99),
        "gid": st.integers(1, 2**45 - 1), "meta": st.sampled_from([{"aff_code": "cid"}, {"make_visible": 1}]),
    })
    return Inbound("POST", "/v2/auth/w/order/submit", b"", JSON, _json_body(draw, fields))


@st.composite
def kraken_orders(draw: st.DrawFn) -> Inbound:
    otype = draw(st.sampled_from(["market", "limit", "stop-loss", "take-profit-limit"]))
    fields = {"pair": draw(st.sampled_from(["XBTUSD", "XXBTZUSD", "ETH/USD".replace("/", "")])),
              "type": draw(_sides), "ordertype": otype, "volume": draw(_amounts)}
    if otype != "market":
        fields["price"] = draw(_amounts)
    if otype == "take-profit-limit":
        fields["price2"] = draw(_amounts)
    fields |= _some(draw, {
        "timeinforce": st.sampled_from(["GTC", "IOC"]), "oflags": st.sampled_from(["post", "fcib", "fciq,nompp"]),
        "starttm": st.just("0"), "expiretm": st.just("+60"), "validate": st.just("true"),
        "nonce": st.just("1700000000000000"), "stptype": st.just("cancel-newest"),
        "userref": st.sampled_from(["7", "-12"]),  # with a userref Kraken takes no cl_ord_id: unchanged
    })
    if draw(st.booleans()):
        return Inbound("POST", "/0/private/AddOrder", b"", JSON, _json_body(draw, fields))
    return Inbound("POST", "/0/private/AddOrder", b"", FORM, _form_body(draw, fields))


@st.composite
def deribit_orders(draw: st.DrawFn) -> Inbound:
    otype = draw(st.sampled_from(["limit", "market", "stop_limit", "take_market"]))
    fields = {"instrument_name": draw(st.sampled_from(["BTC-PERPETUAL", "BTC_USDC-PERPETUAL", "ETH-27JUN25-3000-C"])),
              "amount": draw(_amounts), "type": otype}
    if otype in ("limit", "stop_limit"):
        fields["price"] = draw(_amounts)
    if otype in ("stop_limit", "take_market"):
        fields["trigger_price"] = draw(_amounts)
    fields |= _some(draw, {
        "time_in_force": st.sampled_from(["good_til_cancelled", "immediate_or_cancel"]),
        "post_only": st.sampled_from(["true", "false"]), "reduce_only": st.just("false"),
        "max_show": _amounts, "trigger": st.just("mark_price"), "access_token": st.just("tok"),
    })
    side = draw(_sides)
    return Inbound("GET", f"/api/v2/private/{side}", _form_body(draw, fields), (), b"")


ORDERS: dict[str, tuple[Any, st.SearchStrategy[Inbound]]] = {
    "bybit": (bybit.EXCHANGE, bybit_orders()), "okx": (okx.EXCHANGE, okx_orders()),
    "bitget": (bitget.EXCHANGE, bitget_orders()), "bitstamp": (bitstamp.EXCHANGE, bitstamp_orders()),
    "bitfinex": (bitfinex.EXCHANGE, bitfinex_orders()), "kraken": (kraken.EXCHANGE, kraken_orders()),
    "deribit": (deribit.EXCHANGE, deribit_orders()),
}


def _reparsed(exchange: Any, prepared: Any, coid: str) -> Any:
    """The independent path: the exchange's full ``prepare`` of the order with the id added
    (what every exchange did before parse-once; Kraken keeps an order with a userref)."""
    rules = exchange.capabilities.client_order_ids
    if exchange is kraken.EXCHANGE and "userref" in (
            json.loads(prepared.body) if prepared.content_type == "application/json"
            else dict(p.split("=", 1) for p in prepared.body.decode().split("&"))):
        return prepared
    value: str | int = int(coid) if rules.max_int else coid
    return exchange.prepare(inbound_with(prepared, rules.field, value))


@pytest.mark.parametrize("name", sorted(ORDERS))
@settings(max_examples=200, deadline=None)
@given(data=st.data(), token=st.uuids(version=4), client=st.sampled_from(["bot", "momentum-bot", "a_b", "x" * 30]))
def test_client_order_ids_fast_injection_equals_a_full_reparse(name: str, data: st.DataObject, token: Any,
                                                              client: str) -> None:
    exchange, orders = ORDERS[name]
    inbound = data.draw(orders)
    try:
        prepared = exchange.prepare(inbound)
    except BadRequest:
        reject()  # a combination the exchange refuses (e.g. an option with a reduce-only flag)
    assert prepared.client_order_id is None
    rules = exchange.capabilities.client_order_ids
    coid = make_client_order_id(rules, client, token.hex)
    fast = exchange.with_client_order_id(prepared, coid)
    slow = _reparsed(exchange, prepared, coid)
    assert fast == slow
    assert repr(fast) == repr(slow)  # Decimals to the digit, every field
    if fast is not prepared:
        assert fast.client_order_id == coid
        # the signed request, read back by the policy test's own reader (from the documented
        # formats), carries the id once, on the order that was checked
        out = exchange.sign(fast, CREDS[name], _STAMP, HOSTS[name])
        if name == "kraken" and fast.content_type == "application/json":  # the reader reads forms
            sent = json.loads(out.body)
            assert (sent["cl_ord_id"], sent["pair"], sent["type"]) == (coid, fast.intents[0].symbol, fast.intents[0].side)
            return
        seen, checked = EXCHANGES[name][1](out), from_intent(fast.intents[0])
        assert (seen.client_order_id, seen.symbol, seen.side) == (coid, checked.symbol, checked.side)


_STAMP = Stamp(
    now_ms=1_800_000_000_000, nonce=1_800_000_000_000_000, unique="0b4a3c1e-5f6d-4e7a-8b9c-0d1e2f3a4b5c")


_COMMON = [*CASES[1:], (bitfinex.EXCHANGE, Inbound("POST", "/v2/auth/w/order/submit", b"", JSON, _json({
    "type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "0.01", "price": "50000"})), r"[0-9]+"),
    (kraken.EXCHANGE, Inbound("POST", "/0/private/AddOrder", b"", JSON, _json({
        "pair": "XBTUSD", "type": "buy", "ordertype": "limit", "volume": "0.01", "price": "50000"})), "")]


@pytest.mark.parametrize(("exchange", "inbound", "rule"), _COMMON, ids=lambda c: getattr(c, "name", ""))
def test_client_order_ids_a_plain_order_is_not_parsed_again(
    exchange: Any, inbound: Inbound, rule: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    prepared = exchange.prepare(inbound)
    expected = _reparsed(exchange, prepared, make_client_order_id(exchange.capabilities.client_order_ids, "bot", "ab" * 16))

    def no_second_parse(self: Any, again: Inbound) -> Any:
        raise AssertionError("the order was parsed again")

    monkeypatch.setattr(type(exchange), "prepare", no_second_parse)
    changed, coid = inject(exchange, prepared, "bot", "ab" * 16)
    assert coid is not None and changed == expected and repr(changed) == repr(expected)


def test_client_order_ids_unusual_orders_fall_back_to_the_reparse() -> None:
    """The fast path declines what it cannot be sure of; the re-parse then decides (and refuses
    what it refuses), so the answer is the same either way."""
    def prep(exchange: Any, path: str, body: dict[str, Any]) -> Any:
        return exchange.prepare(Inbound("POST", path, b"", JSON, _json(body)))

    order = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "1", "price": "2"}
    # an explicit null id keeps its place in the body on a re-parse: not appended
    null_id = prep(bybit.EXCHANGE, "/v5/order/create", {"orderLinkId": None, **order})
    assert member_appended(null_id, "orderLinkId", "bot-1") is None
    assert bybit.EXCHANGE.with_client_order_id(null_id, "bot-1").body == _json(
        {"orderLinkId": "bot-1", **order}).replace(b" ", b"")
    # the field's name anywhere in the body (here a tag): the re-parse, with the same result
    okx_order = {"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit", "sz": "1", "px": "2",
                 "tag": "clOrdId"}
    tagged = prep(okx.EXCHANGE, "/api/v5/trade/order", okx_order)
    assert member_appended(tagged, "clOrdId", "bot1") is None
    assert okx.EXCHANGE.with_client_order_id(tagged, "bot1") == _reparsed(okx.EXCHANGE, tagged, "bot1")
    # an id the exchange refuses, or one that would need escaping: the re-parse refuses it
    plain = prep(bybit.EXCHANGE, "/v5/order/create", order)
    for bad in ("has space", "x" * 37, 'q"uote'):
        with pytest.raises(BadRequest):
            bybit.EXCHANGE.with_client_order_id(plain, bad)
    assert member_appended(plain, "orderLinkId", "has space") is None
    # Bitfinex: a cid that is no canonical integer is not appended as it is
    bfx = prep(bitfinex.EXCHANGE, "/v2/auth/w/order/submit",
               {"type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "1", "price": "2"})
    assert member_appended(bfx, "cid", "007", as_int=True) is None
    assert bitfinex.EXCHANGE.with_client_order_id(bfx, "007").client_order_id == "7"  # inject then declines
    # Kraken with a userref (form or JSON): unchanged, never a cl_ord_id beside it
    for ctype, body in ((FORM, b"pair=XBTUSD&type=buy&ordertype=market&volume=1&userref=7"),
                        (JSON, b'{"pair":"XBTUSD","type":"buy","ordertype":"market","volume":"1","userref":7}')):
        with_ref = kraken.EXCHANGE.prepare(Inbound("POST", "/0/private/AddOrder", b"", ctype, body))
        assert kraken.EXCHANGE.with_client_order_id(with_ref, "bot-1") is with_ref
    # a form order at the parameter limit, or a query that already names the field: not appended
    deribit_order = deribit.EXCHANGE.prepare(Inbound("GET", "/api/v2/private/buy", b"instrument_name=BTC-PERPETUAL"
                                                     b"&amount=10&type=market", (), b""))
    assert pair_appended(deribit_order, "amount", "1", to_query=True) is None
    assert pair_appended(deribit_order, "label", "bot-1") is None  # a query order has no form body
    many = replace(deribit_order, query="&".join(f"k{i}=v" for i in range(64)))
    assert pair_appended(many, "label", "bot-1", to_query=True) is None
    # batches and orders that carry an id are never the fast path's
    batch = bybit.EXCHANGE.prepare(Inbound("POST", "/v5/order/create-batch", b"", JSON, _json(
        {"category": "spot", "request": [{k: v for k, v in order.items() if k != "category"}]})))
    assert member_appended(batch, "orderLinkId", "bot-1") is None
