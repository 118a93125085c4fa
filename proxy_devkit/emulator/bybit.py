"""A strict Bybit v5 emulator (docs/exchanges.md §2), independent of the proxy's signer.

Checks, as Bybit documents (BYB-GUIDE): the ``X-BAPI-API-KEY`` header (10003), the signature in
``X-BAPI-SIGN`` over ``timestamp + api_key + recv_window + payload`` where the payload is the raw
query string (GET) or the raw JSON body (POST) as received (10004: lower-case hex HMAC-SHA256,
or base64 RSA PKCS#1 v1.5 SHA-256 for RSA keys), and
``server_time - recv_window <= timestamp < server_time + 1000`` (10002). Errors use Bybit's
envelope ``{"retCode", "retMsg", "result", "retExtInfo", "time"}`` with HTTP 200, as Bybit does.
Keeps an in-memory unified account for spot: balances, create/cancel/query/open orders and
their batch forms; a reused ``orderLinkId`` is refused with 110072.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from proxy_devkit.emulator.bybit_contracts import CONTRACTS, contract_json, order_notional
from proxy_devkit.emulator.bybit_stream import order_event, private_stream
from proxy_devkit.emulator.recorder import Received
from proxy_devkit.emulator.state import EmulatorState

SYMBOLS = {
    "BTCUSDT": ("BTC", "USDT", Decimal("50000")),
    "ETHUSDT": ("ETH", "USDT", Decimal("3000")),
}
_LINK_ID = re.compile(r"[A-Za-z0-9\-_]{1,36}")


@dataclass
class BybitKey:
    """An API key as the emulator knows it: HMAC secret text or an RSA public key."""

    api_key: str
    hmac_secret: str | None = None
    public_key: rsa.RSAPublicKey | None = None


@dataclass
class BybitState(EmulatorState):
    keys: dict[str, BybitKey] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(
        default_factory=lambda: {
            "USDT": Decimal("100000"), "BTC": Decimal("2"), "ETH": Decimal("10")}
    )
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: GET /v5/user/query-api lists "Withdraw" under Wallet when True
    can_withdraw: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1_000_000))


class _Reject(Exception):
    def __init__(self, code: int, msg: str, status: int = 200) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def create(keys: Mapping[str, Mapping[str, str]]) -> tuple[BybitState, Starlette]:
    """An emulator knowing ``keys``: api_key -> Vault-style fields (``api_secret`` as issued:
    an HMAC secret, or an RSA PEM private key whose public half the emulator keeps)."""
    state = BybitState()
    for api_key, fields in keys.items():
        secret = fields["api_secret"]
        if "PRIVATE KEY-----" in secret:
            private = serialization.load_pem_private_key(secret.encode(), password=None)
            public = private.public_key()
            if not isinstance(public, rsa.RSAPublicKey):
                raise ValueError("Bybit self-generated keys are RSA")
            state.keys[api_key] = BybitKey(api_key, public_key=public)
        else:
            state.keys[api_key] = BybitKey(api_key, hmac_secret=secret)
    return state, create_app(state)


def create_app(state: BybitState) -> Starlette:
    """The emulator's ASGI app over ``state``."""

    async def handle(request: Request) -> JSONResponse:
        body = await request.body()
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        headers = tuple(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"])
        path, method = request.url.path, request.method
        try:
            result, ext = _dispatch(state, method, path, raw_query, body, request.headers)
        except _Reject as rej:
            state.recorder.add(
                Received(method, path, raw_query, headers, body, False, str(rej.code)))
            return JSONResponse(
                {"retCode": rej.code, "retMsg": rej.msg, "result": {}, "retExtInfo": {},
                 "time": state.now_ms()}, status_code=rej.status)
        state.recorder.add(Received(method, path, raw_query, headers, body, True))
        return JSONResponse({"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": ext,
                             "time": state.now_ms()})

    async def stream(ws: WebSocket) -> None:
        await private_stream(state, ws)

    methods = ["GET", "POST", "PUT", "DELETE"]
    return Starlette(routes=[WebSocketRoute("/v5/private", stream),
                             Route("/{path:path}", handle, methods=methods)])


def _verify(key: BybitKey, message: bytes, signature: str) -> bool:
    if key.hmac_secret is not None:
        expected = hmac.new(key.hmac_secret.encode(), message, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)
    assert key.public_key is not None
    try:
        raw = base64.b64decode(signature, validate=True)
        key.public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, InvalidSignature):
        return False
    return True


def _authenticate(state: BybitState, method: str, raw_query: str, body: bytes,
                  headers: Mapping[str, str]) -> BybitKey:
    api_key = headers.get("x-bapi-api-key")
    key = state.keys.get(api_key or "")
    if key is None:
        raise _Reject(10003, "API key is invalid.")
    ts_text, sign = headers.get("x-bapi-timestamp", ""), headers.get("x-bapi-sign")
    window_text = headers.get("x-bapi-recv-window", "5000")
    if not ts_text.isdigit() or not window_text.isdigit() or not sign:
        raise _Reject(10001, "params error: X-BAPI-TIMESTAMP, X-BAPI-RECV-WINDOW and "
                             "X-BAPI-SIGN are required")
    payload = raw_query.encode("latin-1") if method == "GET" else body
    message = (ts_text + key.api_key + window_text).encode() + payload
    if not _verify(key, message, sign):
        raise _Reject(10004, "Error sign, please check your signature generation algorithm.")
    timestamp, window, server = int(ts_text), int(window_text), state.now_ms()
    if not server - window <= timestamp < server + 1000:
        raise _Reject(10002, "invalid request, please check your server timestamp or recv_window "
                             f"param. req_timestamp[{timestamp}],server_timestamp[{server}],"
                             f"recv_window[{window}]")
    return key


def _dispatch(state: BybitState, method: str, path: str, raw_query: str, body: bytes,
              headers: Mapping[str, str]) -> tuple[Any, dict[str, Any]]:
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    public = _public(state, method, path, query)
    if public is not None:
        return public, {}
    _authenticate(state, method, raw_query, body, headers)
    params: dict[str, Any] = query
    if method == "POST":
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise _Reject(10001, "params error: body is not valid JSON") from None
        if not isinstance(params, dict):
            raise _Reject(10001, "params error: body must be a JSON object")
    with state.lock:
        return _private(state, method, path, params)


def _public(state: BybitState, method: str, path: str, q: dict[str, str]) -> Any:
    if method != "GET":
        return None
    now = state.now_ms()
    if path == "/v5/market/time":
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}
    if path == "/v5/market/instruments-info":
        category = q.get("category")
        wanted = q.get("symbol")
        if category == "spot":
            items = [_instrument(s) for s in SYMBOLS if wanted in (None, s)]
        else:
            items = [contract_json(category, s) for (c, s) in CONTRACTS
                     if c == category and wanted in (None, s)]
        return {"category": category, "list": items, "nextPageCursor": ""}
    if path == "/v5/market/tickers":
        return {"category": q.get("category"), "list": [
            {"symbol": s, "lastPrice": str(ref), "bid1Price": str(ref), "ask1Price": str(ref),
             "bid1Size": "1", "ask1Size": "1", "highPrice24h": str(ref), "lowPrice24h": str(ref),
             "prevPrice24h": str(ref), "price24hPcnt": "0", "volume24h": "0", "turnover24h": "0"}
            for s, ref in _references(q.get("category")).items() if q.get("symbol") in (None, s)]}
    return None


def _references(category: str | None) -> dict[str, Decimal]:
    if category == "spot":
        return {s: ref for s, (_, _, ref) in SYMBOLS.items()}
    return {s: c[4] for (cat, s), c in CONTRACTS.items() if cat == category}


def _instrument(symbol: str) -> dict[str, Any]:
    base, quote, _ = SYMBOLS[symbol]
    return {
        "symbol": symbol, "baseCoin": base, "quoteCoin": quote, "innovation": "0",
        "status": "Trading", "marginTrading": "both", "stTag": "0",
        "lotSizeFilter": {"basePrecision": "0.000001", "quotePrecision": "0.00000001",
                          "minOrderQty": "0.000048", "maxOrderQty": "71.73956243",
                          "minOrderAmt": "1", "maxOrderAmt": "2000000"},
        "priceFilter": {"tickSize": "0.01"},
        "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
    }


Result = tuple[Any, dict[str, Any]]


def _private(state: BybitState, method: str, path: str, p: dict[str, Any]) -> Result:
    route = (method, path)
    if route == ("GET", "/v5/account/wallet-balance"):
        return _wallet(state, p), {}
    if route == ("GET", "/v5/account/info"):
        return {"marginMode": "REGULAR_MARGIN", "updatedTime": str(state.now_ms()),
                "unifiedMarginStatus": 5, "dcpStatus": "OFF", "timeWindow": 10, "smpGroup": 0,
                "isMasterTrader": False, "spotHedgingStatus": "OFF"}, {}
    if route == ("GET", "/v5/user/query-api"):
        return {"id": "1", "note": "emulator", "apiKey": "", "readOnly": 0, "secret": "",
                "permissions": {"Spot": ["SpotTrade"], "Wallet": ["Withdraw"] if state.can_withdraw else []},
                "ips": ["*"], "type": 1,
                "unified": 0, "uta": 1, "isMaster": True}, {}
    if route == ("GET", "/v5/asset/coin/query-info"):
        return {"rows": [{"name": c, "coin": c, "remainAmount": "1000000", "chains": []}
                         for c in sorted(state.balances)]}, {}
    if route == ("POST", "/v5/order/create"):
        return _create(state, p), {}
    if route == ("POST", "/v5/order/cancel"):
        return _cancel(state, p), {}
    if route in (("POST", "/v5/order/create-batch"), ("POST", "/v5/order/cancel-batch")):
        return _batch(state, p, _create if path.endswith("create-batch") else _cancel)
    if route == ("GET", "/v5/order/realtime"):
        return _orders(state, p, open_only=True), {}
    if route == ("GET", "/v5/order/history"):
        return _orders(state, p, open_only=False), {}
    if route == ("POST", "/v5/asset/withdraw/create"):
        return {"id": "10195"}, {}  # the proxy must never let this through
    raise _Reject(10017, "route not found", status=404)


def _wallet(state: BybitState, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("accountType") not in ("UNIFIED", "SPOT", "CONTRACT"):
        raise _Reject(10001, "accountType only support UNIFIED.")
    coins = []
    for coin, total in sorted(state.balances.items()):
        locked = sum((o["_locked"] for o in state.orders.values()
                      if o["orderStatus"] == "New" and o["_lock_coin"] == coin), Decimal(0))
        coins.append({"coin": coin, "equity": str(total), "walletBalance": str(total),
                      "locked": str(locked), "usdValue": "0", "borrowAmount": "0",
                      "spotBorrow": "0", "totalOrderIM": "0", "totalPositionIM": "0",
                      "unrealisedPnl": "0", "cumRealisedPnl": "0", "bonus": "0",
                      "marginCollateral": True, "collateralSwitch": True})
    return {"list": [{"accountType": "UNIFIED", "totalEquity": "0", "totalWalletBalance": "0",
                      "totalAvailableBalance": "0", "coin": coins}]}


def _dec(p: dict[str, Any], key: str) -> Decimal | None:
    value = p.get(key)
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise InvalidOperation
        out = Decimal(value)
    except InvalidOperation:
        raise _Reject(10001, f"params error: {key} invalid") from None
    if not out.is_finite() or out <= 0:
        raise _Reject(10001, f"params error: {key} invalid")
    return out


def _create(state: BybitState, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("category") in ("linear", "inverse"):
        return _create_contract(state, p)
    if p.get("category") != "spot":
        raise _Reject(10001, "params error: the emulator trades spot, linear and inverse")
    symbol = p.get("symbol")
    if symbol not in SYMBOLS:
        raise _Reject(10001, "params error: symbol invalid")
    side, otype = p.get("side"), p.get("orderType")
    if side not in ("Buy", "Sell") or otype not in ("Limit", "Market"):
        raise _Reject(10001, "params error: side or orderType invalid")
    link = p.get("orderLinkId") or f"emu-{next(state._ids)}"
    if not isinstance(link, str) or not _LINK_ID.fullmatch(link):
        raise _Reject(10001, "params error: orderLinkId invalid")
    if any(o["orderLinkId"] == link for o in state.orders.values()):
        raise _Reject(110072, "OrderLinkedID is duplicate")
    qty, price = _dec(p, "qty"), _dec(p, "price")
    if qty is None or (otype == "Limit" and price is None):
        raise _Reject(10001, "params error: qty and (for Limit) price are required")
    base, quote, ref = SYMBOLS[symbol]
    unit = p.get("marketUnit") or ("quoteCoin" if side == "Buy" else "baseCoin")
    if otype == "Market":
        price = ref
        base_qty = (qty / ref).quantize(Decimal("0.000001")) if unit == "quoteCoin" else qty
    else:
        base_qty = qty
    assert price is not None
    cost = base_qty * price
    lock_coin, lock = (quote, cost) if side == "Buy" else (base, base_qty)
    if state.balances.get(lock_coin, Decimal(0)) < lock:
        raise _Reject(170131, "Insufficient balance.")
    order_id = str(next(state._ids))
    filled = otype == "Market"
    if filled:
        state.balances[lock_coin] -= lock
        gain_coin, gain = (base, base_qty) if side == "Buy" else (quote, cost)
        state.balances[gain_coin] = state.balances.get(gain_coin, Decimal(0)) + gain
    now = str(state.now_ms())
    state.orders[order_id] = {
        "orderId": order_id, "orderLinkId": link, "symbol": symbol, "side": side,
        "orderType": otype, "price": str(price if otype == "Limit" else Decimal(0)),
        "qty": str(qty), "marketUnit": unit if otype == "Market" else "",
        "timeInForce": p.get("timeInForce", "IOC" if filled else "GTC"),
        "orderStatus": "Filled" if filled else "New", "cumExecQty": str(base_qty if filled else 0),
        "cumExecValue": str(cost if filled else 0), "cumExecFee": "0",
        "avgPrice": str(price) if filled else "", "leavesQty": "0" if filled else str(qty),
        "leavesValue": "0" if filled else str(cost), "createdTime": now, "updatedTime": now,
        "category": "spot", "reduceOnly": False, "isLeverage": "0", "positionIdx": 0,
        "triggerPrice": "0", "stopOrderType": "", "orderIv": "", "rejectReason": "EC_NoError",
        "_locked": Decimal(0) if filled else lock, "_lock_coin": lock_coin,
    }
    order_event(state, state.orders[order_id])
    return {"orderId": order_id, "orderLinkId": link}


def _create_contract(state: BybitState, p: dict[str, Any]) -> dict[str, Any]:
    """A linear or inverse order: it rests (Limit) or fills at the reference price (Market);
    margin is not modelled. An inverse qty must be a whole number of USD."""
    category, symbol = str(p.get("category")), p.get("symbol")
    contract = CONTRACTS.get((category, str(symbol)))
    if contract is None:
        raise _Reject(10001, "params error: symbol invalid")
    side, otype = p.get("side"), p.get("orderType")
    if side not in ("Buy", "Sell") or otype not in ("Limit", "Market"):
        raise _Reject(10001, "params error: side or orderType invalid")
    if "marketUnit" in p:
        raise _Reject(10001, "params error: marketUnit is for spot only")
    link = p.get("orderLinkId") or f"emu-{next(state._ids)}"
    if not isinstance(link, str) or not _LINK_ID.fullmatch(link):
        raise _Reject(10001, "params error: orderLinkId invalid")
    if any(o["orderLinkId"] == link for o in state.orders.values()):
        raise _Reject(110072, "OrderLinkedID is duplicate")
    qty, price = _dec(p, "qty"), _dec(p, "price")
    if qty is None or (otype == "Limit" and price is None):
        raise _Reject(10001, "params error: qty and (for Limit) price are required")
    if category == "inverse" and qty != qty.to_integral_value():
        raise _Reject(10001, "params error: qty invalid")
    px = contract[4] if price is None else price
    filled = otype == "Market"
    order_id = str(next(state._ids))
    now = str(state.now_ms())
    state.orders[order_id] = {
        "orderId": order_id, "orderLinkId": link, "symbol": symbol, "side": side,
        "orderType": otype, "price": str(price if otype == "Limit" else Decimal(0)),
        "qty": str(qty), "marketUnit": "",
        "timeInForce": "IOC" if filled else p.get("timeInForce", "GTC"),
        "orderStatus": "Filled" if filled else "New", "cumExecQty": str(qty if filled else 0),
        "cumExecValue": "0", "cumExecFee": "0", "avgPrice": str(px) if filled else "",
        "leavesQty": "0" if filled else str(qty), "leavesValue": "0", "createdTime": now,
        "updatedTime": now, "category": category, "reduceOnly": False, "isLeverage": "",
        "positionIdx": 0, "triggerPrice": p.get("triggerPrice", ""), "stopOrderType": "",
        "orderIv": "", "takeProfit": p.get("takeProfit", ""), "stopLoss": p.get("stopLoss", ""),
        "tpOrderType": p.get("tpOrderType", "Market" if "takeProfit" in p else ""),
        "slOrderType": p.get("slOrderType", "Market" if "stopLoss" in p else ""),
        "rejectReason": "EC_NoError", "_locked": Decimal(0), "_lock_coin": "",
        "_notional": order_notional(category, str(symbol), qty, px),
    }
    return {"orderId": order_id, "orderLinkId": link}


def _find(state: BybitState, p: dict[str, Any]) -> dict[str, Any] | None:
    for order in state.orders.values():
        if ("orderId" in p and order["orderId"] == p["orderId"]) or (
            "orderLinkId" in p and order["orderLinkId"] == p["orderLinkId"]
        ):
            return order
    return None


def _cancel(state: BybitState, p: dict[str, Any]) -> dict[str, Any]:
    if "orderId" not in p and "orderLinkId" not in p:
        raise _Reject(10001, "params error: orderId or orderLinkId is required")
    order = _find(state, p)
    if order is None or order["orderStatus"] != "New" or order["symbol"] != p.get("symbol"):
        raise _Reject(110001, "Order does not exist")
    order["orderStatus"] = "Cancelled"
    order["_locked"] = Decimal(0)
    order["updatedTime"] = str(state.now_ms())
    order_event(state, order)
    return {"orderId": order["orderId"], "orderLinkId": order["orderLinkId"]}


def _batch(state: BybitState, p: dict[str, Any],
           one: Callable[[BybitState, dict[str, Any]], dict[str, Any]]) -> Result:
    items = p.get("request")
    if not isinstance(items, list) or not 1 <= len(items) <= 20:
        raise _Reject(10001, "params error: request must hold 1-20 orders")
    results, codes = [], []
    for item in items:
        entry = {"category": p.get("category"), **item}
        try:
            res = one(state, entry)
            codes.append({"code": 0, "msg": "OK"})
        except _Reject as rej:
            res = {"orderId": "", "orderLinkId": item.get("orderLinkId", "")}
            codes.append({"code": rej.code, "msg": rej.msg})
        results.append({"category": entry["category"], "symbol": item.get("symbol"),
                        "createAt": str(state.now_ms()), **res})
    return {"list": results}, {"list": codes}


def _orders(state: BybitState, p: dict[str, Any], open_only: bool) -> dict[str, Any]:
    chosen = [o for o in state.orders.values()
              if ("symbol" not in p or o["symbol"] == p["symbol"])
              and ("orderId" not in p or o["orderId"] == p["orderId"])
              and ("orderLinkId" not in p or o["orderLinkId"] == p["orderLinkId"])]
    by_id = "orderId" in p or "orderLinkId" in p
    if open_only and not by_id:
        chosen = [o for o in chosen if o["orderStatus"] == "New"]
    public = [{k: v for k, v in o.items() if not k.startswith("_")} for o in chosen]
    return {"category": "spot", "list": public, "nextPageCursor": ""}
