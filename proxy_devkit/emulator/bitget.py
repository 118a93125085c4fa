"""A strict Bitget v2 spot emulator (docs/exchanges.md §4), independent of the proxy's signer.

Checks, as Bitget documents: ``ACCESS-KEY`` (40006 unknown), ``ACCESS-PASSPHRASE`` (40012),
``ACCESS-TIMESTAMP`` within 30 s of server time (40008; 40005 if not ms digits) and
``ACCESS-SIGN`` (40009): base64 HMAC-SHA256, or SHA256withRSA for RSA keys, over
``timestamp + METHOD + path + ["?" + query sorted by key, percent-decoded] + body``; a client
that signs the query in another order fails. POST bodies must be ``application/json`` (40007).
Errors are HTTP 400 with ``{"code", "msg", "requestTime", "data": null}``; the auth codes come from
ccxt's table (docs/exchanges.md §4). Demo trading (``create(..., demo_trading=True)``): Bitget's demo
keys are used on the live host with the header ``paptrading: 1`` (Bitget's "Demo Trading" REST
guide); a key used in the other environment is refused with 40099 "exchange environment is
incorrect" (the answer users report, ccxt issues #25004, #25502). UNVERIFIED: the code and
wording for a duplicate ``clientOid`` (43122 here) and for an unknown symbol (40034 here).
``clientOid`` is unique per account over all orders, open or not.
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

from proxy_devkit.emulator import passphrase_stream
from proxy_devkit.emulator.recorder import Received
from proxy_devkit.emulator.state import EmulatorState

SYMBOLS = {
    "BTCUSDT": ("BTC", "USDT", Decimal("50000")),
    "ETHUSDT": ("ETH", "USDT", Decimal("3000")),
}
WINDOW_MS = 30_000
_CLIENT_OID = re.compile(r"[0-9a-zA-Z\-+_#]{1,49}")


@dataclass
class BitgetKey:
    api_key: str
    passphrase: str
    hmac_secret: str | None = None
    public_key: rsa.RSAPublicKey | None = None


@dataclass
class BitgetState(EmulatorState):
    keys: dict[str, BitgetKey] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(
        default_factory=lambda: {
            "USDT": Decimal("100000"), "BTC": Decimal("2"), "ETH": Decimal("10")}
    )
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1_100_000_000))
    #: True: the keys are demo-trading keys, which Bitget accepts only with ``paptrading: 1``
    demo_trading: bool = False


class _Reject(Exception):
    def __init__(self, code: str, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def create(keys: Mapping[str, Mapping[str, str]], *, demo_trading: bool = False,
           ) -> tuple[BitgetState, Starlette]:
    """An emulator knowing ``keys``: api_key -> {"api_secret": HMAC text or RSA PEM,
    "passphrase": ...}; ``demo_trading``: Bitget's demo trading (demo keys, ``paptrading: 1``)."""
    state = BitgetState(demo_trading=demo_trading)
    for api_key, fields in keys.items():
        secret, passphrase = fields["api_secret"], fields["passphrase"]
        if "PRIVATE KEY-----" in secret:
            private = serialization.load_pem_private_key(secret.encode(), password=None)
            public = private.public_key()
            if not isinstance(public, rsa.RSAPublicKey):
                raise ValueError("Bitget asymmetric keys are RSA")
            state.keys[api_key] = BitgetKey(api_key, passphrase, public_key=public)
        else:
            state.keys[api_key] = BitgetKey(api_key, passphrase, hmac_secret=secret)
    return state, create_app(state)


def create_app(state: BitgetState) -> Starlette:
    async def handle(request: Request) -> JSONResponse:
        body = await request.body()
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        headers = tuple((k.decode("latin-1"), v.decode("latin-1"))
                        for k, v in request.scope["headers"])
        path = request.url.path
        try:
            data = _dispatch(state, request, path, raw_query, body)
        except _Reject as rej:
            state.recorder.add(Received(request.method, path, raw_query, headers, body, False,
                                        rej.code))
            return JSONResponse({"code": rej.code, "msg": rej.msg,
                                 "requestTime": state.now_ms(), "data": None},
                                status_code=rej.status)
        state.recorder.add(Received(request.method, path, raw_query, headers, body, True))
        return JSONResponse({"code": "00000", "msg": "success", "requestTime": state.now_ms(),
                             "data": data})

    async def stream(ws: WebSocket) -> None:
        await passphrase_stream.private_stream(state, STREAM_SPEC, ws)

    return Starlette(routes=[WebSocketRoute("/v2/ws/private", stream),
                             Route("/{path:path}", handle, methods=["GET", "POST"])])


def _spot_symbol(symbol: str) -> dict[str, Any]:
    base, quote, _ = SYMBOLS[symbol]
    return {
        "symbol": symbol, "baseCoin": base, "quoteCoin": quote, "minTradeAmount": "0",
        "maxTradeAmount": "10000000000", "takerFeeRate": "0.001", "makerFeeRate": "0.001",
        "pricePrecision": "2", "quantityPrecision": "6", "quotePrecision": "8",
        "status": "online", "minTradeUSDT": "1", "buyLimitPriceRatio": "0.05",
        "sellLimitPriceRatio": "0.05", "areaSymbol": "no", "orderQuantity": "200",
        "openTime": "1532454360000", "offTime": "", "maxOrderNum": "400",
    }


def _coin(coin: str) -> dict[str, Any]:
    return {"coinId": str(len(coin)), "coin": coin, "transfer": "true", "areaCoin": "no",
            "chains": [{"chain": coin, "needTag": "false", "withdrawable": "true",
                        "rechargeable": "true", "withdrawFee": "0.0001", "extraWithdrawFee": "0",
                        "depositConfirm": "12", "withdrawConfirm": "12",
                        "minDepositAmount": "0.0001", "minWithdrawAmount": "0.001",
                        "browserUrl": "", "contractAddress": "", "withdrawStep": "0",
                        "withdrawMinScale": "8", "congestion": "normal"}]}


def _public(state: BitgetState, path: str, query: dict[str, str]) -> Any:
    if path == "/api/v2/public/time":
        return {"serverTime": str(state.now_ms())}
    if path == "/api/v2/spot/public/symbols":
        return [_spot_symbol(s) for s in SYMBOLS if query.get("symbol") in (None, s)]
    if path == "/api/v2/spot/public/coins":
        return [_coin(c) for c in ("BTC", "ETH", "USDT")]
    if path in ("/api/v2/mix/market/contracts", "/api/v2/margin/currencies"):
        return []
    if path == "/api/v2/spot/market/tickers":
        return [{"symbol": s, "lastPr": str(v[2]), "open": str(v[2]), "high24h": str(v[2]),
                 "low24h": str(v[2]), "bidPr": str(v[2]), "askPr": str(v[2]), "bidSz": "1",
                 "askSz": "1", "baseVolume": "0", "quoteVolume": "0", "usdtVolume": "0",
                 "ts": str(state.now_ms()), "change24h": "0", "changeUtc24h": "0",
                 "openUtc": str(v[2])} for s, v in SYMBOLS.items()
                if query.get("symbol") in (None, s)]
    raise _Reject("40404", "Request URL NOT FOUND", 404)


def _dispatch(state: BitgetState, request: Request, path: str, raw_query: str,
              body: bytes) -> Any:
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    if request.method == "GET" and not path.startswith(("/api/v2/spot/account",
                                                         "/api/v2/spot/trade")):
        return _public(state, path, query)
    _authenticate(state, request, raw_query, body)
    if request.method == "POST":
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip()
        if ctype != "application/json":
            raise _Reject("40007", "Invalid Content_Type, please use `application/json` format")
        try:
            params = json.loads(body or b"{}", parse_float=Decimal)
        except ValueError:
            raise _Reject("40017", "Parameter verification failed") from None
        if not isinstance(params, dict):
            raise _Reject("40017", "Parameter verification failed")
    else:
        params = query
    with state.lock:
        return _private(state, request.method, path, params)


def _authenticate(state: BitgetState, request: Request, raw_query: str, body: bytes) -> None:
    h = request.headers
    api_key, sign = h.get("access-key"), h.get("access-sign")
    ts, passphrase = h.get("access-timestamp"), h.get("access-passphrase")
    if not api_key:
        raise _Reject("40001", "ACCESS_KEY cannot be empty")
    if not sign:
        raise _Reject("40003", "Signature cannot be empty")
    if not passphrase:
        raise _Reject("40011", "ACCESS_PASSPHRASE cannot be empty")
    if not ts or not ts.isdigit() or len(ts) != 13:
        raise _Reject("40005", "Invalid ACCESS_TIMESTAMP")
    if abs(state.now_ms() - int(ts)) > WINDOW_MS:
        raise _Reject("40008", "Request timestamp expired")
    key = state.keys.get(api_key)
    if key is None:
        raise _Reject("40006", "Invalid ACCESS_KEY")
    if not hmac.compare_digest(key.passphrase.encode(), passphrase.encode()):
        raise _Reject("40012", "apikey/password is incorrect")
    if (h.get("paptrading") == "1") != state.demo_trading:  # a demo key live, or a live key in demo
        raise _Reject("40099", "exchange environment is incorrect")
    pairs = sorted(parse_qsl(raw_query, keep_blank_values=True), key=lambda kv: kv[0])
    signed_query = "?" + "&".join(f"{k}={v}" for k, v in pairs) if pairs else ""
    message = f"{ts}{request.method.upper()}{request.url.path}{signed_query}".encode() + body
    if not _verify(key, message, sign):
        raise _Reject("40009", "sign signature error")


def _verify(key: BitgetKey, message: bytes, sign: str) -> bool:
    if key.hmac_secret is not None:
        want = base64.b64encode(
            hmac.new(key.hmac_secret.encode(), message, hashlib.sha256).digest()).decode()
        return hmac.compare_digest(want, sign)
    assert key.public_key is not None
    try:
        key.public_key.verify(base64.b64decode(sign, validate=True), message,
                              padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _private(state: BitgetState, method: str, path: str, p: dict[str, Any]) -> Any:
    if (method, path) == ("GET", "/api/v2/spot/account/assets"):
        return [{"coin": c, "available": f"{v:f}", "frozen": _locked(state, c), "locked": "0",
                 "limitAvailable": "0", "uTime": str(state.now_ms())}
                for c, v in sorted(state.balances.items()) if p.get("coin") in (None, c)]
    if (method, path) == ("POST", "/api/v2/spot/trade/place-order"):
        order = _place(state, p)
        return {"orderId": order["orderId"], "clientOid": order["clientOid"]}
    if (method, path) == ("POST", "/api/v2/spot/trade/batch-orders"):
        return _batch(state, p, lambda o: _place(state, {"symbol": p.get("symbol"), **o}))
    if (method, path) == ("POST", "/api/v2/spot/trade/cancel-order"):
        order = _cancel(state, p)
        return {"orderId": order["orderId"], "clientOid": order["clientOid"]}
    if (method, path) == ("POST", "/api/v2/spot/trade/batch-cancel-order"):
        return _batch(state, p, lambda o: _cancel(state, {"symbol": p.get("symbol"), **o}))
    if (method, path) == ("POST", "/api/v2/spot/trade/cancel-symbol-order"):
        for o in state.orders.values():
            if o["symbol"] == p.get("symbol") and o["status"] == "live":
                o["status"], o["uTime"] = "cancelled", str(state.now_ms())
        return {"symbol": p.get("symbol")}
    if (method, path) == ("GET", "/api/v2/spot/trade/orderInfo"):
        return [_find(state, p)]
    if (method, path) in (("GET", "/api/v2/spot/trade/unfilled-orders"),
                          ("GET", "/api/v2/spot/trade/history-orders")):
        live = path.endswith("unfilled-orders")
        return [o for o in state.orders.values()
                if (o["status"] == "live") == live and p.get("symbol") in (None, o["symbol"])]
    if (method, path) == ("POST", "/api/v2/spot/wallet/withdrawal"):
        return {"orderId": "1", "clientOid": None}  # the proxy must never let this through
    raise _Reject("40404", "Request URL NOT FOUND", 404)


def _locked(state: BitgetState, coin: str) -> str:
    total = Decimal(0)
    for o in state.orders.values():
        base, quote, _ = SYMBOLS[o["symbol"]]
        if o["status"] != "live":
            continue
        if o["side"] == "buy" and coin == quote:
            total += Decimal(o["size"]) * Decimal(o["price"])
        elif o["side"] == "sell" and coin == base:
            total += Decimal(o["size"])
    return f"{total:f}"


def _batch(state: BitgetState, p: dict[str, Any],
           one: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    items = p.get("orderList")
    if not isinstance(items, list) or not items or len(items) > 50:
        raise _Reject("40017", "Parameter verification failed")
    ok, failed = [], []
    for item in items:
        try:
            order = one(item)
            ok.append({"orderId": order["orderId"], "clientOid": order["clientOid"]})
        except _Reject as rej:
            failed.append({"orderId": item.get("orderId", ""), "clientOid": item.get("clientOid"),
                           "errorMsg": rej.msg, "errorCode": rej.code})
    return {"successList": ok, "failureList": failed}


def _decimal(p: Mapping[str, Any], name: str) -> Decimal:
    value = p.get(name)
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise _Reject("40017", f"Parameter {name} error") from None
    if value is None or not result.is_finite() or result <= 0:
        raise _Reject("40017", f"Parameter {name} error")
    return result


def _place(state: BitgetState, p: dict[str, Any]) -> dict[str, Any]:
    symbol = p.get("symbol")
    if symbol not in SYMBOLS:
        raise _Reject("40034", f"Parameter {symbol} does not exist")
    side, otype = p.get("side"), p.get("orderType")
    if side not in ("buy", "sell") or otype not in ("limit", "market"):
        raise _Reject("40017", "Parameter verification failed")
    coid = p.get("clientOid") or f"emu{next(state._ids)}"
    if not isinstance(coid, str) or not _CLIENT_OID.fullmatch(coid):
        raise _Reject("40017", "Parameter clientOid error")
    if any(o["clientOid"] == coid for o in state.orders.values()):
        raise _Reject("43122", "Duplicate clientOid")
    base, quote, ref = SYMBOLS[symbol]
    size = _decimal(p, "size")
    price = _decimal(p, "price") if otype == "limit" else ref
    # size is base for limits and market sells, quote for market buys.
    base_qty = size / ref if (otype == "market" and side == "buy") else size
    cost = size if (otype == "market" and side == "buy") else size * price
    spend_coin, spend = (quote, cost) if side == "buy" else (base, base_qty)
    if state.balances.get(spend_coin, Decimal(0)) < spend:
        raise _Reject("43012", "Insufficient balance")
    now = str(state.now_ms())
    filled = otype == "market"
    if filled:
        state.balances[spend_coin] -= spend
        gain_coin, gain = (base, base_qty) if side == "buy" else (quote, cost)
        state.balances[gain_coin] = state.balances.get(gain_coin, Decimal(0)) + gain
    else:
        state.balances[spend_coin] -= spend  # held while live
    order = {
        "userId": "1", "symbol": symbol, "orderId": str(next(state._ids)), "clientOid": coid,
        "price": f"{price:f}" if otype == "limit" else "0", "size": f"{size:f}",
        "orderType": otype, "side": side, "status": "filled" if filled else "live",
        "priceAvg": f"{ref:f}" if filled else "0", "force": str(p.get("force") or "gtc").lower(),
        "baseVolume": f"{base_qty:f}" if filled else "0",
        "quoteVolume": f"{cost:f}" if filled else "0", "enterPointSource": "API",
        "feeDetail": "", "orderSource": "normal", "cTime": now, "uTime": now,
        "tpslType": "normal", "cancelReason": "",
    }
    state.orders[order["orderId"]] = order
    passphrase_stream.order_event(state.streams, _ws_order(order), "SPOT")
    return order


def _find(state: BitgetState, p: Mapping[str, Any]) -> dict[str, Any]:
    oid, coid = p.get("orderId"), p.get("clientOid")
    if oid is None and coid is None:
        raise _Reject("40017", "Parameter verification failed")
    for o in state.orders.values():
        if (oid is not None and o["orderId"] == str(oid)) or (
                oid is None and o["clientOid"] == coid):
            if p.get("symbol") not in (None, o["symbol"]):
                break
            return o
    raise _Reject("43001", "The order does not exist")


def _cancel(state: BitgetState, p: Mapping[str, Any]) -> dict[str, Any]:
    if p.get("symbol") not in SYMBOLS:
        raise _Reject("40034", f"Parameter {p.get('symbol')} does not exist")
    order = _find(state, p)
    if order["status"] != "live":
        raise _Reject("43001", "The order does not exist")
    base, quote, _ = SYMBOLS[order["symbol"]]
    if order["side"] == "buy":
        state.balances[quote] += Decimal(order["size"]) * Decimal(order["price"])
    else:
        state.balances[base] += Decimal(order["size"])
    order["status"], order["uTime"] = "cancelled", str(state.now_ms())
    passphrase_stream.order_event(state.streams, _ws_order(order), "SPOT")
    return order


def _ws_order(order: dict[str, Any]) -> dict[str, Any]:
    """An order as Bitget's ``orders`` channel shows it (``instId``, ``ordId``, ``clientOid``)."""
    return {"instId": order["symbol"], "ordId": order["orderId"], **order}


#: Bitget's private stream (/v2/ws/private): its checks and its error codes
STREAM_SPEC = passphrase_stream.Spec(
    verify_path="/user/verify", verify=_verify, ok_code=0,
    channels=frozenset({"account", "orders", "fill", "positions", "orders-algo", "plan-order"}),
    login_failed=(30005, "Login failed"), not_logged_in=(30004, "User not logged in"),
    bad_channel=30001, illegal=30012,
)


def order_notional(symbol: str, quantity: Decimal, price: Decimal) -> Decimal:
    """What an order is worth in quote units: this exchange trades spot here, where
    ``size`` counts base units."""
    return quantity * price
