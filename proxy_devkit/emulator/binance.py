"""A strict Binance spot emulator (docs/exchanges.md §1), independent of the proxy's signer.

Checks, as Binance documents: the ``X-MBX-APIKEY`` header (-2014 malformed, -2015 unknown),
the signature over ``query + body`` minus the ``signature`` pair (-1022), and
``timestamp < serverTime + 1000`` and ``serverTime - timestamp <= recvWindow`` (-1021).
Keeps an in-memory account: balances, new/query/cancel/open orders, duplicate
``newClientOrderId`` among open orders refused with -2010. Market data: ``ticker/price``, and
the rolling-window and trading-day tickers (``GET /api/v3/ticker``, ``ticker/tradingDay``:
``symbol`` or a JSON array ``symbols`` of at most 100, one of them required; an unknown symbol
is -1121).
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
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from proxy_devkit.emulator.binance_stream import order_event, private_stream
from proxy_devkit.emulator.rate_faults import FaultSwitch
from proxy_devkit.emulator.recorder import Received
from proxy_devkit.emulator.state import EmulatorState

SYMBOLS = {
    "BTCUSDT": ("BTC", "USDT", Decimal("50000")),
    "ETHUSDT": ("ETH", "USDT", Decimal("3000")),
    "SOLUSDT": ("SOL", "USDT", Decimal("150")),
}
_KEY_FORMAT = re.compile(r"[A-Za-z0-9]{8,128}")


@dataclass
class BinanceKey:
    """An API key as the emulator knows it: HMAC secret text or a PEM public key."""

    api_key: str
    hmac_secret: str | None = None
    public_key_pem: str | None = None
    can_withdraw: bool = False


@dataclass
class BinanceState(EmulatorState):
    keys: dict[str, BinanceKey] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(
        default_factory=lambda: {"USDT": Decimal("100000"), "BTC": Decimal("2"), "ETH": Decimal("10")}
    )
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: client order id -> ids of the orders placed with it, oldest first (an index, so placing
    #: and finding an order costs the same after a million orders as after one)
    by_client_id: dict[str, list[int]] = field(default_factory=dict)
    faults: FaultSwitch = field(default_factory=FaultSwitch)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def rate_limit(self, status: int = 429, retry_after: str | None = None, count: int = 1) -> None:
        """Answer the next ``count`` requests as Binance does over its limits: 429, or 418 (IP
        ban), code -1003, with ``Retry-After`` when given."""
        msg = ("Way too many requests; IP banned until {until}. Please use WebSocket Streams for "
               "live updates to avoid bans." if status == 418 else
               "Too much request weight used; current limit is 6000 request weight per 1 MINUTE. "
               "Please use WebSocket Streams for live updates to avoid polling the API.")
        body = {"code": -1003, "msg": msg.format(until=self.now_ms() + 120_000)}
        self.faults.arm(status, body, retry_after=retry_after, count=count)

    def add_key(self, key: BinanceKey) -> None:
        self.keys[key.api_key] = key


class _Reject(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _err(status: int, code: int, msg: str) -> _Reject:
    return _Reject(status, code, msg)


def _verify(key: BinanceKey, payload: bytes, signature: str) -> bool:
    if key.hmac_secret is not None:
        expected = hmac.new(key.hmac_secret.encode(), payload, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature.lower())
    assert key.public_key_pem is not None
    try:
        raw = base64.b64decode(unquote(signature), validate=True)
    except ValueError:
        return False
    public = serialization.load_pem_public_key(key.public_key_pem.encode())
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(raw, payload)
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(raw, payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _strip_signature(raw: str) -> tuple[str, str | None]:
    """Remove the ``signature=`` pair from a raw query or body; return (rest, signature)."""
    parts = raw.split("&") if raw else []
    sig = [p for p in parts if p.startswith("signature=")]
    rest = [p for p in parts if not p.startswith("signature=")]
    return "&".join(rest), (sig[-1].split("=", 1)[1] if sig else None)


def _market(symbol: str) -> dict[str, Any]:
    base, quote_asset, _ = SYMBOLS[symbol]
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
        "quoteAsset": quote_asset, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True, "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
             "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
             "stepSize": "0.00001000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def create(keys: Mapping[str, Mapping[str, str]]) -> tuple[BinanceState, Starlette]:
    """An emulator knowing ``keys``: api_key -> Vault-style fields (``api_secret`` as issued:
    an HMAC secret, or a PEM private key whose public half the emulator keeps)."""
    state = BinanceState()
    for api_key, fields in keys.items():
        secret = fields["api_secret"]
        if "PRIVATE KEY-----" in secret:
            private = serialization.load_pem_private_key(secret.encode(), password=None)
            public_pem = private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
            state.add_key(BinanceKey(api_key, public_key_pem=public_pem))
        else:
            state.add_key(BinanceKey(api_key, hmac_secret=secret))
    return state, create_app(state)


def create_app(state: BinanceState) -> Starlette:
    """The emulator's ASGI app over ``state``."""

    async def handle(request: Request) -> JSONResponse:
        body = await request.body()
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"])
        path = request.url.path
        fault = state.faults.take()
        if fault is not None:
            state.recorder.add(
                Received(request.method, path, raw_query, headers, body, False, str(fault.status)))
            return JSONResponse(fault.body, status_code=fault.status, headers=state.faults.headers(fault))
        try:
            result = _dispatch(state, request.method, path, raw_query, body,
                               request.headers.get("x-mbx-apikey"))
        except _Reject as rej:
            state.recorder.add(Received(request.method, path, raw_query, headers, body, False, str(rej.code)))
            return JSONResponse({"code": rej.code, "msg": rej.msg}, status_code=rej.status)
        state.recorder.add(Received(request.method, path, raw_query, headers, body, True))
        return JSONResponse(result)

    async def stream(ws: WebSocket) -> None:
        await private_stream(state, ws)

    return Starlette(routes=[WebSocketRoute("/ws-api/v3", stream),
                             Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE"])])


def _params(raw_query: str, body: bytes) -> dict[str, str]:
    # Binance: parameters may be split between query and body; the query string wins.
    params = dict(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
    params.update(parse_qsl(raw_query, keep_blank_values=True))
    return params


def _dispatch(
    state: BinanceState, method: str, path: str, raw_query: str, body: bytes, api_key: str | None
) -> Any:
    public: dict[tuple[str, str], Callable[[], Any]] = {
        ("GET", "/api/v3/ping"): lambda: {},
        ("GET", "/api/v3/time"): lambda: {"serverTime": state.now_ms()},
        ("GET", "/api/v3/exchangeInfo"): lambda: {
            "timezone": "UTC", "serverTime": state.now_ms(), "rateLimits": [], "exchangeFilters": [],
            "symbols": [_market(s) for s in SYMBOLS],
        },
    }
    if (method, path) in public:
        return public[(method, path)]()
    if (method, path) in (("GET", "/api/v3/ticker"), ("GET", "/api/v3/ticker/tradingDay")):
        return _window_tickers(state, _params(raw_query, b""))
    if (method, path) == ("GET", "/api/v3/ticker/price"):
        sym = _params(raw_query, b"").get("symbol")
        if sym:
            if sym not in SYMBOLS:
                raise _err(400, -1121, "Invalid symbol.")
            return {"symbol": sym, "price": str(SYMBOLS[sym][2])}
        return [{"symbol": s, "price": str(v[2])} for s, v in SYMBOLS.items()]
    key = _authenticate(state, raw_query, body, api_key)
    params = _params(raw_query, body)
    with state.lock:
        return _private(state, key, method, path, params)


def _window_tickers(state: BinanceState, params: Mapping[str, str]) -> Any:
    """The FULL statistics of ``GET /api/v3/ticker`` / ``ticker/tradingDay`` (no trades here,
    so the window is flat at the table's price)."""
    if ("symbol" in params) == ("symbols" in params):
        raise _err(400, -1102, "Param 'symbol' or 'symbols' must be sent, but both were empty/null!"
                   if "symbol" not in params else "Combination of optional parameters invalid.")
    names: Any = [params["symbol"]] if "symbol" in params else None
    if names is None:
        try:
            names = json.loads(params["symbols"])
        except ValueError:
            raise _err(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _err(400, -1100, "Illegal characters found in parameter 'symbols'.")
        if len(names) > 100:
            raise _err(400, -1101, "Too many values sent for parameter 'symbols', maximum allowed up to 100.")
    if any(n not in SYMBOLS for n in names):
        raise _err(400, -1121, "Invalid symbol.")
    now = state.now_ms()
    stats = [{
        "symbol": n, "priceChange": "0.00000000", "priceChangePercent": "0.000",
        "weightedAvgPrice": f"{SYMBOLS[n][2]:.8f}", "openPrice": f"{SYMBOLS[n][2]:.8f}",
        "highPrice": f"{SYMBOLS[n][2]:.8f}", "lowPrice": f"{SYMBOLS[n][2]:.8f}",
        "lastPrice": f"{SYMBOLS[n][2]:.8f}", "volume": "0.00000000", "quoteVolume": "0.00000000",
        "openTime": now - 86_400_000, "closeTime": now, "firstId": -1, "lastId": -1, "count": 0,
    } for n in names]
    return stats[0] if "symbol" in params else stats


def _authenticate(state: BinanceState, raw_query: str, body: bytes, api_key: str | None) -> BinanceKey:
    if not api_key or not _KEY_FORMAT.fullmatch(api_key):
        raise _err(401, -2014, "API-key format invalid.")
    key = state.keys.get(api_key)
    if key is None:
        raise _err(401, -2015, "Invalid API-key, IP, or permissions for action.")
    query_rest, sig_q = _strip_signature(raw_query)
    body_rest, sig_b = _strip_signature(body.decode("latin-1"))
    signature = sig_q or sig_b
    if signature is None:
        raise _err(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
    if not _verify(key, (query_rest + body_rest).encode("latin-1"), signature):
        raise _err(400, -1022, "Signature for this request is not valid.")
    params = _params(raw_query, body)
    ts_text = params.get("timestamp")
    if ts_text is None or not ts_text.isdigit():
        raise _err(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
    timestamp = int(ts_text)
    if timestamp > 10**14:  # microseconds
        timestamp //= 1000
    window = Decimal(params.get("recvWindow", "5000"))
    server = state.now_ms()
    if timestamp >= server + 1000:
        raise _err(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if server - timestamp > window:
        raise _err(400, -1021, "Timestamp for this request is outside of the recvWindow.")
    return key


def _private(state: BinanceState, key: BinanceKey, method: str, path: str, p: dict[str, str]) -> Any:
    if (method, path) == ("GET", "/api/v3/account"):
        return {
            "makerCommission": 10, "takerCommission": 10, "canTrade": True,
            "canWithdraw": key.can_withdraw, "canDeposit": True, "accountType": "SPOT",
            "updateTime": state.now_ms(), "permissions": ["SPOT"],
            "balances": [{"asset": a, "free": f"{v:.8f}", "locked": "0.00000000"}
                         for a, v in sorted(state.balances.items())],
        }
    if (method, path) == ("GET", "/sapi/v1/account/apiRestrictions"):
        return {"ipRestrict": True, "enableWithdrawals": key.can_withdraw, "enableReading": True,
                "enableSpotAndMarginTrading": True, "createTime": state.now_ms()}
    if (method, path) == ("GET", "/sapi/v1/margin/allPairs"):
        return [{"id": i, "symbol": s, "base": b, "quote": q, "isMarginTrade": True, "isBuyAllowed": True,
                 "isSellAllowed": True} for i, (s, (b, q, _)) in enumerate(SYMBOLS.items())]
    if (method, path) == ("GET", "/sapi/v1/capital/config/getall"):
        return [{
            "coin": a, "name": a, "depositAllEnable": True, "withdrawAllEnable": True,
            "free": f"{v:.8f}", "locked": "0", "freeze": "0", "withdrawing": "0", "ipoing": "0",
            "ipoable": "0", "storage": "0", "isLegalMoney": False, "trading": True,
            "networkList": [{
                "network": a, "coin": a, "withdrawIntegerMultiple": "0.00000001", "isDefault": True,
                "depositEnable": True, "withdrawEnable": True, "depositDesc": "", "withdrawDesc": "",
                "name": a, "resetAddressStatus": False, "withdrawFee": "0.0001", "withdrawMin": "0.001",
                "withdrawMax": "9999999", "minConfirm": 1, "unLockConfirm": 2, "sameAddress": False,
                "estimatedArrivalTime": 5, "busy": False, "contractAddressUrl": "", "contractAddress": "",
            }],
        } for a, v in sorted(state.balances.items())]
    if (method, path) == ("GET", "/sapi/v1/margin/isolated/allPairs"):
        return []
    if (method, path) == ("POST", "/api/v3/order"):
        return _new_order(state, p)
    if (method, path) == ("POST", "/api/v3/order/test"):
        return _new_order(state, p, place=False)  # validated as an order, nothing placed
    if path == "/api/v3/order" and method in ("GET", "DELETE"):
        order = _find(state, p)
        if method == "DELETE":
            if order["status"] != "NEW":
                raise _err(400, -2011, "Unknown order sent.")
            order["status"] = "CANCELED"
            order_event(state, order, "CANCELED")
        return order
    if (method, path) == ("GET", "/api/v3/openOrders"):
        sym = p.get("symbol")
        return [o for o in state.orders.values()
                if o["status"] == "NEW" and (sym is None or o["symbol"] == sym)]
    if (method, path) == ("POST", "/sapi/v1/capital/withdraw/apply"):
        return {"id": "7213fea8e94b4a5593d507237e5a555b"}  # the proxy must never let this through
    raise _err(404, -1000, "An unknown error occurred while processing the request.")


def _find(state: BinanceState, p: dict[str, str]) -> dict[str, Any]:
    symbol = p.get("symbol")
    if symbol not in SYMBOLS:
        raise _err(400, -1121, "Invalid symbol.")
    candidates: list[int] = []
    if "orderId" in p and p["orderId"].isdigit():
        candidates.append(int(p["orderId"]))
    if "origClientOrderId" in p:
        candidates.extend(state.by_client_id.get(p["origClientOrderId"], ()))
    for order_id in sorted(set(candidates)):  # the oldest match first, as a scan in order would
        order = state.orders.get(order_id)
        if order is not None and order["symbol"] == symbol:
            return order
    if "orderId" not in p and "origClientOrderId" not in p:
        raise _err(400, -1102,
                   "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
    raise _err(400, -2013, "Order does not exist.")


def _new_order(state: BinanceState, p: dict[str, str], *, place: bool = True) -> dict[str, Any]:
    symbol = p.get("symbol", "")
    if symbol not in SYMBOLS:
        raise _err(400, -1121, "Invalid symbol.")
    side, otype = p.get("side"), p.get("type")
    if side not in ("BUY", "SELL"):
        raise _err(400, -1117, "Invalid side.")
    if otype not in ("LIMIT", "MARKET", "LIMIT_MAKER"):
        raise _err(400, -1116, "Invalid orderType.")
    coid = p.get("newClientOrderId") or f"emu{next(state._ids)}"
    if not re.fullmatch(r"[a-zA-Z0-9\-_]{1,36}", coid):
        raise _err(400, -1100, "Illegal characters found in parameter 'newClientOrderId'; "
                               "legal range is '^[a-zA-Z0-9-_]{1,36}$'.")
    if any(state.orders[i]["status"] == "NEW" for i in state.by_client_id.get(coid, ())):
        raise _err(400, -2010, "Duplicate order sent.")
    base, quote_asset, ref = SYMBOLS[symbol]
    qty = Decimal(p["quantity"]) if "quantity" in p else None
    price = Decimal(p["price"]) if "price" in p else None
    if otype == "LIMIT" and (price is None or qty is None or "timeInForce" not in p):
        raise _err(400, -1102,
                   "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")
    if otype == "MARKET":
        if qty is None:
            qty = (Decimal(p["quoteOrderQty"]) / ref).quantize(Decimal("0.00001"))
        price = ref
    assert qty is not None and price is not None
    cost = qty * price
    spend_asset, spend = (quote_asset, cost) if side == "BUY" else (base, qty)
    if state.balances.get(spend_asset, Decimal(0)) < spend:
        raise _err(400, -2010, "Account has insufficient balance for requested action.")
    if not place:
        return {}
    order_id = next(state._ids)
    filled = otype == "MARKET"
    if filled:
        state.balances[spend_asset] -= spend
        gain_asset, gain = (base, qty) if side == "BUY" else (quote_asset, cost)
        state.balances[gain_asset] = state.balances.get(gain_asset, Decimal(0)) + gain
    order = {
        "symbol": symbol, "orderId": order_id, "orderListId": -1, "clientOrderId": coid,
        "transactTime": state.now_ms(), "time": state.now_ms(), "updateTime": state.now_ms(),
        "price": f"{price if otype != 'MARKET' else Decimal(0):.8f}", "origQty": f"{qty:.8f}",
        "executedQty": f"{qty if filled else Decimal(0):.8f}",
        "cummulativeQuoteQty": f"{cost if filled else Decimal(0):.8f}",
        "status": "FILLED" if filled else "NEW", "timeInForce": p.get("timeInForce", "GTC"),
        "type": otype, "side": side, "workingTime": state.now_ms(),
        "selfTradePreventionMode": "EXPIRE_MAKER", "isWorking": True,
    }
    state.orders[order_id] = order
    order_event(state, order, "TRADE" if filled else "NEW")
    state.by_client_id.setdefault(coid, []).append(order_id)
    return {**order, "fills": []}


def order_notional(symbol: str, quantity: Decimal, price: Decimal) -> Decimal:
    """What an order is worth in quote units: this exchange trades spot here, where
    ``quantity`` counts base units."""
    return quantity * price
