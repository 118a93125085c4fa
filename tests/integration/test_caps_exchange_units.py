"""Caps count what the exchange counts (issue 12, cases 4-7), through a real proxy process and
the strict emulators.

4. Notional is contracts x contract size x price (OKX DOGE-USDT-SWAP is 1,000 DOGE a contract;
   inverse contracts count USD), read from the exchange's instruments endpoint once per cache
   period and charged to the weight budget; an instrument whose size is unknown is refused.
5. Every price the exchange will use is checked or refused: Bybit orderIv (also on amend),
   Binance pegged orders, stop and take-profit prices.
6. Symbol aliases cannot escape a per-symbol cap (Kraken XXBTZUSD is XBTUSD).
7. Order-type and time-in-force rules see the exchange's defaults and every attached leg.

Each refusal is a contract error, and nothing reaches the exchange's order endpoints.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

FIELDS = {
    "okx": {"api_key": "okx-caps-key-0123", "api_secret": "OKXCAPSSECRET0123456789ABCDEF",
            "passphrase": "CapsPass1!"},
    "bybit": {"api_key": "bybit_caps_key_0123", "api_secret": "bybit-caps-secret-0123456789abcdef"},
    "kraken": {"api_key": "kraken-caps-key-0123",
               "api_secret": base64.b64encode(b"kraken-caps-secret-" * 4).decode()},
    "binance": {"api_key": "binanceCapsKey0123456", "api_secret": "c" * 64},
    "bitfinex": {"api_key": "bitfinex-caps-key-0123", "api_secret": "bitfinex-caps-secret-0123456789"},
    "deribit": {"api_key": "drbCapsClient1", "api_secret": "deribit-caps-secret-0123456789"},
    "coinbase": {"api_key": "organizations/org-caps/apiKeys/key-caps",
                 "api_secret": ec.generate_private_key(ec.SECP256R1()).private_bytes(
                     serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                     serialization.NoEncryption()).decode()},
}
ALL = ["read", "trade", "cancel"]


def _grant(account: str, *lines: str) -> str:
    return f'\n[[grants]]\naccount = "{account}"\nallow = {json.dumps(ALL)}\n' + "".join(f"{x}\n" for x in lines)


POLICIES = {
    # case 4: 10,000 (quote / USD) a order, on contracts too
    "notional": 'version = 1\nclient = "notional"\n'
                + _grant("okx-main", 'max_order_notional = "10000"')
                + _grant("bybit-main", 'max_order_notional = "10000"')
                + _grant("deribit-main", 'max_order_notional = "10000"')
                + _grant("okx-tight", 'max_order_notional = "10000"')
                + _grant("coinbase-main", 'max_order_notional = "1000"'),
    # case 5: every price within 2% of the exchange's last price
    "banded": 'version = 1\nclient = "banded"\n'
              + _grant("binance-main", 'price_band = "2%"')
              + _grant("bybit-main", 'price_band = "2%"'),
    # case 6: 0.1 BTC on Kraken's XBTUSD, under any spelling
    "aliased": 'version = 1\nclient = "aliased"\n'
               + _grant("kraken-main", 'symbols = ["XBTUSD", "ETHXBT"]', 'max_order_qty = "1"',
                        "[grants.per_symbol.XBTUSD]", 'max_order_qty = "0.1"'),
    # case 7: limit orders only; immediate-or-cancel only
    "limit-only": 'version = 1\nclient = "limit-only"\n'
                  + _grant("bybit-main", 'order_types = ["limit"]')
                  + _grant("bitfinex-main", 'order_types = ["exchange limit"]'),
    "ioc-only": 'version = 1\nclient = "ioc-only"\n'
                + _grant("okx-main", 'time_in_force = ["ioc"]')
                + _grant("bybit-main", 'time_in_force = ["ioc"]')
                + _grant("kraken-main", 'time_in_force = ["ioc"]')
                + _grant("deribit-main", 'time_in_force = ["immediate_or_cancel"]'),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [AccountSpec(f"{name}-main", name, fields) for name, fields in FIELDS.items()]
    accounts.append(AccountSpec("okx-tight", "okx", FIELDS["okx"], extra_toml="weight_per_minute = 2"))
    with start_stack(tmp_path_factory.mktemp("caps"), accounts, POLICIES) as s:
        yield s


def call(stack: Stack, client: str, account: str, method: str, path: str, *,
         json_body: dict[str, Any] | None = None, form: dict[str, str] | None = None,
         query: dict[str, str] | None = None) -> httpx.Response:
    headers = {"Proxy-Authorization": f"Bearer {stack.token(client)}"}
    content: bytes | None = None
    if json_body is not None:
        content, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
    if form is not None:
        content = httpx.QueryParams(form).__str__().encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    return httpx.request(method, f"{stack.proxy_url}/x/{account}{path}", params=query, content=content,
                         headers=headers, timeout=10)


def sent(stack: Stack, account: str, path: str) -> int:
    return sum(1 for r in stack.emulator(account).recorder.all() if r.path == path)


def refused(r: httpx.Response, code: str, rule: str | None = None) -> None:
    assert r.headers.get("x-proxy-error") is not None or r.status_code >= 400, r.text
    error = r.json()["error"]
    assert error["code"] == code, r.text
    if rule is not None:
        assert error.get("rule") == rule, r.text


def okx_order(inst: str, sz: str, px: str, **extra: str) -> dict[str, str]:
    return {"instId": inst, "tdMode": "cross", "side": "buy", "ordType": "limit", "sz": sz, "px": px, **extra}


# ---------------------------------------------------------------- 4. notional


def test_case4_okx_linear_swap_counts_contracts_times_contract_size(stack: Stack) -> None:
    """DOGE-USDT-SWAP is 1,000 DOGE a contract: 100 contracts at 0.1 is 10,000 USDT (the cap);
    100,000 contracts is 10,000,000 USDT, which the old arithmetic (sz x px) let through."""
    before = sent(stack, "okx-main", "/api/v5/trade/order")
    ok = call(stack, "notional", "okx-main", "POST", "/api/v5/trade/order",
              json_body=okx_order("DOGE-USDT-SWAP", "100", "0.1"))
    assert ok.status_code == 200 and ok.json()["code"] == "0", ok.text
    for sz in ("101", "100000"):
        r = call(stack, "notional", "okx-main", "POST", "/api/v5/trade/order",
                 json_body=okx_order("DOGE-USDT-SWAP", sz, "0.1"))
        refused(r, "policy_denied", "max_order_notional")
    assert sent(stack, "okx-main", "/api/v5/trade/order") == before + 1
    placed = [o for o in stack.emulator("okx-main").orders.values() if o["instId"] == "DOGE-USDT-SWAP"]
    assert [o["_notional"] for o in placed] == [10000]  # the emulator's own arithmetic agrees
    record = next(r for r in stack.audit_records() if r.get("request_id") == ok.headers["x-proxy-request-id"]
                  and r.get("phase") == "decision")
    assert record["intent"]["notional"] == "10000.0"  # the audit counts it the same way


def test_case4_okx_inverse_swap_counts_usd_per_contract(stack: Stack) -> None:
    """BTC-USD-SWAP is 100 USD a contract, whatever the price: 100 contracts is 10,000 USD."""
    ok = call(stack, "notional", "okx-main", "POST", "/api/v5/trade/order",
              json_body=okx_order("BTC-USD-SWAP", "100", "50000"))
    assert ok.status_code == 200 and ok.json()["code"] == "0", ok.text
    r = call(stack, "notional", "okx-main", "POST", "/api/v5/trade/order",
             json_body=okx_order("BTC-USD-SWAP", "101", "1"))  # a low price changes nothing
    refused(r, "policy_denied", "max_order_notional")


def test_case4_amends_count_contracts_too(stack: Stack) -> None:
    """An amend carrying only a new size is sized the same way (priced from the ticker)."""
    before = sent(stack, "okx-main", "/api/v5/trade/amend-order")
    for body in ({"instId": "DOGE-USDT-SWAP", "ordId": "1", "newSz": "101"},
                 {"instId": "DOGE-USDT-SWAP", "ordId": "1", "newSz": "101", "newPx": "0.1"},
                 {"instId": "DOGE-USDT-SWAP", "ordId": "1", "newPx": "0.1"}):  # size unknown
        r = call(stack, "notional", "okx-main", "POST", "/api/v5/trade/amend-order", json_body=body)
        refused(r, "policy_denied", "max_order_notional")
    assert sent(stack, "okx-main", "/api/v5/trade/amend-order") == before


def test_case4_unknown_contract_size_is_refused_never_guessed(stack: Stack) -> None:
    before = sent(stack, "okx-main", "/api/v5/trade/order")
    r = call(stack, "notional", "okx-main", "POST", "/api/v5/trade/order",
             json_body=okx_order("ETH-USDT-SWAP", "1", "3000"))  # not in the exchange's table
    refused(r, "policy_denied", "max_order_notional")
    assert "contract size" in r.json()["error"]["message"]
    r = call(stack, "notional", "okx-main", "POST", "/api/v5/trade/order",
             json_body=okx_order("BTC-USD-250328-50000-C", "1", "0.01"))  # an option
    refused(r, "policy_denied", "max_order_notional")
    assert sent(stack, "okx-main", "/api/v5/trade/order") == before


def test_case4_instruments_are_read_once_per_cache_period(stack: Stack) -> None:
    def reads() -> int:
        return sum(1 for r in stack.emulator("okx-main").recorder.all()
                   if r.path == "/api/v5/public/instruments" and "BTC-USDT-SWAP" in r.query)
    for _ in range(4):
        r = call(stack, "notional", "okx-main", "POST", "/api/v5/trade/order",
                 json_body=okx_order("BTC-USDT-SWAP", "30", "50000"))  # 30 x 0.01 BTC x 50,000
        refused(r, "policy_denied", "max_order_notional")
    assert reads() == 1


def test_case4_instrument_reads_spend_the_accounts_weight_budget(stack: Stack) -> None:
    """2 a minute: the first order's instrument read and the order spend it; the next order's
    instrument read is over budget and refused before anything is sent."""
    first = call(stack, "notional", "okx-tight", "POST", "/api/v5/trade/order",
                 json_body=okx_order("DOGE-USDT-SWAP", "1", "0.1"))
    assert first.status_code == 200 and first.json()["code"] == "0", first.text
    seen = len(stack.emulator("okx-tight").recorder.all())
    second = call(stack, "notional", "okx-tight", "POST", "/api/v5/trade/order",
                  json_body=okx_order("BTC-USD-SWAP", "1", "50000"))
    refused(second, "rate_limited", "rate_limit.account")
    assert len(stack.emulator("okx-tight").recorder.all()) == seen


def test_case4_bybit_linear_counts_base_coin_inverse_counts_usd(stack: Stack) -> None:
    def order(category: str, symbol: str, qty: str, price: str) -> httpx.Response:
        return call(stack, "notional", "bybit-main", "POST", "/v5/order/create", json_body={
            "category": category, "symbol": symbol, "side": "Buy", "orderType": "Limit",
            "qty": qty, "price": price})
    assert order("linear", "BTCUSDT", "0.2", "50000").json()["retCode"] == 0
    refused(order("linear", "BTCUSDT", "0.21", "50000"), "policy_denied", "max_order_notional")
    assert order("inverse", "BTCUSD", "10000", "50000").json()["retCode"] == 0
    refused(order("inverse", "BTCUSD", "10001", "1"), "policy_denied", "max_order_notional")
    notionals = sorted(o["_notional"] for o in stack.emulator("bybit-main").orders.values()
                       if "_notional" in o)
    assert notionals == [10000, 10000]


def test_case4_deribit_inverse_amount_is_usd_linear_amount_is_coin(stack: Stack) -> None:
    def order(inst: str, amount: str, price: str) -> httpx.Response:
        return call(stack, "notional", "deribit-main", "GET", "/api/v2/private/buy",
                    query={"instrument_name": inst, "amount": amount, "type": "limit", "price": price})
    assert "result" in order("BTC-PERPETUAL", "10000", "50000").json()
    refused(order("BTC-PERPETUAL", "10010", "1"), "policy_denied", "max_order_notional")
    assert "result" in order("BTC_USDC-PERPETUAL", "0.2", "50000").json()
    refused(order("BTC_USDC-PERPETUAL", "0.201", "50000"), "policy_denied", "max_order_notional")


def test_case4_coinbase_futures_count_contracts_of_contract_size(stack: Stack) -> None:
    """BIT is 0.01 BTC a contract: 2 contracts at 50,000 are 1,000 USD (the cap), 3 are over."""
    def order(size: str, coid: str) -> httpx.Response:
        return call(stack, "notional", "coinbase-main", "POST", "/api/v3/brokerage/orders", json_body={
            "client_order_id": coid, "product_id": "BIT-26DEC25-CDE", "side": "BUY",
            "order_configuration": {"limit_limit_gtc": {"base_size": size, "limit_price": "50000"}}})
    ok = order("2", "caps-fut-1")
    assert ok.status_code == 200 and ok.json()["success"] is True, ok.text
    refused(order("3", "caps-fut-2"), "policy_denied", "max_order_notional")
    placed = [o["_notional"] for o in stack.emulator("coinbase-main").orders.values() if "_notional" in o]
    assert placed == [1000]


# ---------------------------------------------------------------- 5. every price


def test_case5_bybit_order_iv_is_refused_on_orders_and_amends(stack: Stack) -> None:
    before = len(stack.emulator("bybit-main").recorder.all())
    amend = call(stack, "banded", "bybit-main", "POST", "/v5/order/amend", json_body={
        "category": "option", "symbol": "BTC-27JUN25-100000-C", "orderId": "1", "orderIv": "5"})
    refused(amend, "bad_request")
    place = call(stack, "banded", "bybit-main", "POST", "/v5/order/create", json_body={
        "category": "option", "symbol": "BTC-27JUN25-100000-C", "side": "Buy", "orderType": "Limit",
        "qty": "1", "price": "500", "orderIv": "5"})
    refused(place, "bad_request")
    assert "orderIv" in place.json()["error"]["message"]
    assert len(stack.emulator("bybit-main").recorder.all()) == before


def test_case5_binance_pegged_and_trailing_orders_are_refused(stack: Stack) -> None:
    before = sent(stack, "binance-main", "/api/v3/order")
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01"}
    for extra in ({"pegPriceType": "PRIMARY_PEG"}, {"pegPriceType": "MARKET_PEG", "pegOffsetValue": "5",
                                                     "pegOffsetType": "PRICE_LEVEL"},
                  {"price": "50000", "trailingDelta": "500"}):
        refused(call(stack, "banded", "binance-main", "POST", "/api/v3/order", form={**base, **extra}),
                "bad_request")
    assert sent(stack, "binance-main", "/api/v3/order") == before


def test_case5_stop_and_take_profit_prices_are_banded(stack: Stack) -> None:
    before = sent(stack, "binance-main", "/api/v3/order")
    stop = {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "timeInForce": "GTC",
            "quantity": "0.01", "price": "50000", "stopPrice": "20000"}
    refused(call(stack, "banded", "binance-main", "POST", "/api/v3/order", form=stop),
            "policy_denied", "price_band")
    tp = call(stack, "banded", "bybit-main", "POST", "/v5/order/create", json_body={
        "category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01",
        "price": "50000", "takeProfit": "90000"})
    refused(tp, "policy_denied", "price_band")
    amend = call(stack, "banded", "bybit-main", "POST", "/v5/order/amend", json_body={
        "category": "linear", "symbol": "BTCUSDT", "orderId": "1", "triggerPrice": "10000"})
    refused(amend, "policy_denied", "price_band")  # an amend carrying only a trigger price
    trigger = call(stack, "banded", "bybit-main", "POST", "/v5/order/create", json_body={
        "category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01",
        "price": "50000", "triggerPrice": "10000", "triggerDirection": 2})
    refused(trigger, "policy_denied", "price_band")
    assert sent(stack, "binance-main", "/api/v3/order") == before


# ---------------------------------------------------------------- 6. aliases


def test_case6_kraken_alias_cannot_escape_the_per_symbol_cap(stack: Stack) -> None:
    before = sent(stack, "kraken-main", "/0/private/AddOrder")
    for pair in ("XBTUSD", "XXBTZUSD", "BTCUSD"):
        r = call(stack, "aliased", "kraken-main", "POST", "/0/private/AddOrder", form={
            "pair": pair, "type": "buy", "ordertype": "limit", "volume": "1.5", "price": "50000"})
        refused(r, "policy_denied", "max_order_qty")
    assert sent(stack, "kraken-main", "/0/private/AddOrder") == before
    ok = call(stack, "aliased", "kraken-main", "POST", "/0/private/AddOrder", form={
        "pair": "XXBTZUSD", "type": "buy", "ordertype": "limit", "volume": "0.1", "price": "50000"})
    assert ok.status_code == 200 and ok.json()["error"] == [], ok.text
    # the grant's symbols list resolves aliases too: XETHXXBT is the granted ETHXBT
    eth = call(stack, "aliased", "kraken-main", "POST", "/0/private/AddOrder", form={
        "pair": "XETHXXBT", "type": "buy", "ordertype": "limit", "volume": "0.5", "price": "0.06"})
    assert eth.status_code == 200 and eth.json()["error"] == [], eth.text


# ---------------------------------------------------------------- 7. effective values and legs


def test_case7_default_time_in_force_is_what_the_rule_sees(stack: Stack) -> None:
    """OKX's limit ordType rests (GTC); Bybit, Kraken and Deribit default to GTC when omitted."""
    okx = call(stack, "ioc-only", "okx-main", "POST", "/api/v5/trade/order",
               json_body={"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "limit",
                          "sz": "0.01", "px": "50000"})
    refused(okx, "policy_denied", "time_in_force")
    bybit = call(stack, "ioc-only", "bybit-main", "POST", "/v5/order/create", json_body={
        "category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01",
        "price": "50000"})
    refused(bybit, "policy_denied", "time_in_force")
    kraken = call(stack, "ioc-only", "kraken-main", "POST", "/0/private/AddOrder", form={
        "pair": "XBTUSD", "type": "buy", "ordertype": "limit", "volume": "0.01", "price": "50000"})
    refused(kraken, "policy_denied", "time_in_force")
    deribit = call(stack, "ioc-only", "deribit-main", "GET", "/api/v2/private/buy", query={
        "instrument_name": "BTC-PERPETUAL", "amount": "10", "type": "limit", "price": "50000"})
    refused(deribit, "policy_denied", "time_in_force")
    ok = call(stack, "ioc-only", "okx-main", "POST", "/api/v5/trade/order",
              json_body={"instId": "BTC-USDT", "tdMode": "cash", "side": "buy", "ordType": "ioc",
                         "sz": "0.01", "px": "50000"})
    assert ok.status_code == 200 and ok.json()["code"] == "0", ok.text


def test_case7_attached_market_legs_and_oco_stops_meet_a_limit_only_policy(stack: Stack) -> None:
    before = sent(stack, "bybit-main", "/v5/order/create")
    tpsl = call(stack, "limit-only", "bybit-main", "POST", "/v5/order/create", json_body={
        "category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01",
        "price": "50000", "takeProfit": "55000", "stopLoss": "45000"})
    refused(tpsl, "policy_denied", "order_types")
    assert "attached order" in tpsl.json()["error"]["message"]
    assert sent(stack, "bybit-main", "/v5/order/create") == before
    limit_legs = call(stack, "limit-only", "bybit-main", "POST", "/v5/order/create", json_body={
        "category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01",
        "price": "50000", "takeProfit": "55000", "tpOrderType": "Limit", "tpLimitPrice": "55000",
        "tpslMode": "Partial"})
    assert limit_legs.json()["retCode"] == 0, limit_legs.text

    oco = call(stack, "limit-only", "bitfinex-main", "POST", "/v2/auth/w/order/submit", json_body={
        "type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "0.01", "price": "50000",
        "flags": 16384, "price_oco_stop": "45000"})
    refused(oco, "policy_denied", "order_types")
    assert sent(stack, "bitfinex-main", "/v2/auth/w/order/submit") == 0
