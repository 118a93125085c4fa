"""A strict OKX v5 emulator (docs/exchanges.md §3), independent of the proxy's signer.

Checks, as OKX documents: every ``OK-ACCESS-*`` header present (50103/50104/50106/50107), the
timestamp in ISO-8601 with milliseconds and ``Z`` (50112) and within 30 s of server time
either way (50102; the REST window is UNVERIFIED in docs/exchanges.md, 30 s is the widely reported
value), the key (50111), demo versus live (50101: a demo key needs ``x-simulated-trading: 1``
and a live key must not send it), the passphrase (50105), and the base64 HMAC-SHA256 over
``timestamp + METHOD + path?query + body`` as received (50113). Auth errors are HTTP 401
``{"msg", "code"}``; order errors are HTTP 200 with per-order ``sCode``/``sMsg``, as OKX does.
Keeps an in-memory spot account: balances, place/cancel/query/pending orders and their batch
forms; a reused ``clOrdId`` is refused with 51016.
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
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from proxy_devkit.emulator import passphrase_stream
from proxy_devkit.emulator.okx_contracts import CONTRACTS, contract_json, contract_notional
from proxy_devkit.emulator.okx_stream import STREAM_SPEC
from proxy_devkit.emulator.rate_faults import FaultSwitch
from proxy_devkit.emulator.recorder import Received
from proxy_devkit.emulator.state import EmulatorState

INSTRUMENTS = {
    "BTC-USDT": ("BTC", "USDT", Decimal("50000")),
    "ETH-USDT": ("ETH", "USDT", Decimal("3000")),
}
WINDOW_MS = 30_000
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_CL_ORD_ID = re.compile(r"[A-Za-z0-9]{1,32}")


@dataclass
class OkxKey:
    api_key: str
    secret: str
    passphrase: str


@dataclass
class OkxState(EmulatorState):
    keys: dict[str, OkxKey] = field(default_factory=dict)
    #: True for a demo-trading (testnet) emulator: keys then need x-simulated-trading: 1.
    simulated_trading: bool = False
    balances: dict[str, Decimal] = field(default_factory=lambda: {
        "USDT": Decimal("100000"), "BTC": Decimal("2"), "ETH": Decimal("10")})
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: FaultSwitch = field(default_factory=FaultSwitch)
    #: what GET /api/v5/account/config says the key may do (add ",withdraw" for a risky key)
    perm: str = "read_only,trade"
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(600_000_000))

    def rate_limit(self, retry_after: str | None = None, count: int = 1) -> None:
        """Answer the next ``count`` requests as OKX does over a rate limit: 429, code 50011."""
        body = {"msg": "Too Many Requests", "code": "50011", "data": []}
        self.faults.arm(429, body, retry_after=retry_after, count=count)


class _Reject(Exception):
    def __init__(self, code: str, msg: str, status: int = 401) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


class _OrderError(Exception):
    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def create(keys: Mapping[str, Mapping[str, str]], *, simulated_trading: bool = False,
           ) -> tuple[OkxState, Starlette]:
    """An emulator knowing ``keys``: api_key -> Vault-style fields (``api_secret``,
    ``passphrase``). ``simulated_trading`` makes it OKX's demo-trading environment."""
    state = OkxState(simulated_trading=simulated_trading)
    for api_key, fields in keys.items():
        state.keys[api_key] = OkxKey(api_key, fields["api_secret"], fields["passphrase"])
    return state, create_app(state)


def create_app(state: OkxState) -> Starlette:
    """The emulator's ASGI app over ``state``."""

    async def handle(request: Request) -> JSONResponse:
        body = await request.body()
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        headers = tuple(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"])
        path, method = request.url.path, request.method
        fault = state.faults.take()
        if fault is not None:
            state.recorder.add(Received(method, path, raw_query, headers, body, False, str(fault.status)))
            return JSONResponse(fault.body, status_code=fault.status, headers=state.faults.headers(fault))
        try:
            reply = _dispatch(state, (method, path, raw_query, body), request.headers)
        except _Reject as rej:
            state.recorder.add(Received(method, path, raw_query, headers, body, False, rej.code))
            return JSONResponse({"msg": rej.msg, "code": rej.code}, status_code=rej.status)
        ok = reply["code"] == "0"
        state.recorder.add(Received(method, path, raw_query, headers, body, ok,
                                    "" if ok else _first_error(reply)))
        return JSONResponse(reply)

    methods = ["GET", "POST", "PUT", "DELETE"]
    async def stream(ws: WebSocket) -> None:
        await passphrase_stream.private_stream(state, STREAM_SPEC, ws)

    return Starlette(routes=[WebSocketRoute("/ws/v5/private", stream),
                             Route("/{path:path}", handle, methods=methods)])


def _first_error(reply: dict[str, Any]) -> str:
    codes = [d.get("sCode") for d in reply.get("data", []) if d.get("sCode", "0") != "0"]
    return str(codes[0]) if codes else str(reply["code"])


def _ok(data: list[Any]) -> dict[str, Any]:
    return {"code": "0", "msg": "", "data": data}


def _authenticate(state: OkxState, request: tuple[str, str, str, bytes],
                  headers: Mapping[str, str]) -> None:
    method, path, raw_query, body = request
    for code, name in (("50103", "OK-ACCESS-KEY"), ("50104", "OK-ACCESS-PASSPHRASE"),
                       ("50106", "OK-ACCESS-SIGN"), ("50107", "OK-ACCESS-TIMESTAMP")):
        if not headers.get(name):
            raise _Reject(code, f'Request header "{name}" cannot be empty.')
    stamp = headers["OK-ACCESS-TIMESTAMP"]
    if not _TIMESTAMP.fullmatch(stamp):
        raise _Reject("50112", "Invalid OK-ACCESS-TIMESTAMP")
    try:
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        raise _Reject("50112", "Invalid OK-ACCESS-TIMESTAMP") from None
    if abs(state.now_ms() - int(when.timestamp() * 1000)) > WINDOW_MS:
        raise _Reject("50102", "Timestamp request expired")
    key = state.keys.get(headers["OK-ACCESS-KEY"])
    if key is None:
        raise _Reject("50111", "Invalid OK-ACCESS-KEY")
    if (headers.get("x-simulated-trading") == "1") != state.simulated_trading:
        raise _Reject("50101", "APIKey does not match current environment.")
    if not hmac.compare_digest(key.passphrase.encode(), headers["OK-ACCESS-PASSPHRASE"].encode()):
        raise _Reject("50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect.')
    request_path = f"{path}?{raw_query}" if raw_query else path
    message = (stamp + method + request_path).encode("latin-1") + body
    expected = base64.b64encode(hmac.new(key.secret.encode(), message, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, headers["OK-ACCESS-SIGN"].encode("latin-1")):
        raise _Reject("50113", "Invalid Sign")


def _dispatch(state: OkxState, request: tuple[str, str, str, bytes],
              headers: Mapping[str, str]) -> dict[str, Any]:
    method, path, raw_query, body = request
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    if method == "GET" and path.startswith(("/api/v5/public/", "/api/v5/market/")):
        return _public(state, path, query)
    _authenticate(state, request, headers)
    params: Any = query
    if method == "POST":
        try:
            params = json.loads(body) if body else {}
        except ValueError:
            raise _Reject("50002", "Json data format error.", status=400) from None
    with state.lock:
        return _private(state, method, path.removeprefix("/api/v5/"), params)


def _public(state: OkxState, path: str, q: dict[str, str]) -> dict[str, Any]:
    now = str(state.now_ms())
    if path == "/api/v5/public/time":
        return _ok([{"ts": now}])
    if path == "/api/v5/public/instruments":
        kind = q.get("instType")
        if kind == "SPOT":
            return _ok([_instrument(i) for i in INSTRUMENTS if q.get("instId") in (None, i)])
        if kind in ("SWAP", "FUTURES"):
            return _ok([contract_json(i) for i, c in CONTRACTS.items()
                        if c[0] == kind and q.get("instId") in (None, i)])
        if kind == "OPTION":
            raise _Reject("51000", "Parameter instFamily or uly error", status=400)
        raise _Reject("51000", "Parameter instType error", status=400)
    if path == "/api/v5/public/underlying":
        return _ok([[]])
    if path in ("/api/v5/market/tickers", "/api/v5/market/ticker"):
        return _ok([
            {"instType": "SPOT", "instId": i, "last": str(ref), "lastSz": "0.1",
             "askPx": str(ref), "askSz": "1", "bidPx": str(ref), "bidSz": "1", "open24h": str(ref),
             "high24h": str(ref), "low24h": str(ref), "volCcy24h": "0", "vol24h": "0",
             "sodUtc0": str(ref), "sodUtc8": str(ref), "ts": now}
            for i, ref in _references().items() if q.get("instId") in (None, i)])
    raise _Reject("50014", "Endpoint request timeout.", status=404)


def order_notional(inst: str, sz: Decimal, px: Decimal) -> Decimal:
    """What an order is worth in quote units from this emulator's own tables (spot sz: base)."""
    return sz * px if inst in INSTRUMENTS else contract_notional(inst, sz, px)


def _references() -> dict[str, Decimal]:
    return {**{i: v[2] for i, v in INSTRUMENTS.items()}, **{i: c[6] for i, c in CONTRACTS.items()}}


def _instrument(inst: str) -> dict[str, Any]:
    base, quote, _ = INSTRUMENTS[inst]
    return {
        "alias": "", "baseCcy": base, "category": "1", "ctMult": "", "ctType": "", "ctVal": "",
        "ctValCcy": "", "expTime": "", "instFamily": "", "instId": inst, "instType": "SPOT",
        "lever": "10", "listTime": "1606468572000", "lotSz": "0.00000001", "maxIcebergSz": "",
        "maxLmtAmt": "20000000", "maxLmtSz": "9999999999", "maxMktAmt": "1000000",
        "maxMktSz": "1000000", "maxStopSz": "1000000", "maxTriggerSz": "9999999999",
        "maxTwapSz": "9999999999", "minSz": "0.00001", "optType": "", "quoteCcy": quote,
        "settleCcy": "", "state": "live", "stk": "", "tickSz": "0.1", "uly": "",
        "ruleType": "normal",
    }


def _private(state: OkxState, method: str, path: str, p: Any) -> dict[str, Any]:
    route = (method, path)
    if route == ("GET", "account/balance"):
        return _ok([_balance(state)])
    if route == ("GET", "account/config"):
        return _ok([{"acctLv": "2", "posMode": "net_mode", "uid": "1", "mainUid": "1",
                     "level": "Lv1", "autoLoan": False, "perm": state.perm}])
    if route == ("GET", "asset/currencies"):
        return _ok([{"ccy": c, "name": c, "chain": f"{c}-{c}", "canDep": True, "canWd": True,
                     "canInternal": True, "minWd": "0.001", "maxWd": "100", "wdTickSz": "8",
                     "minFee": "0.0001", "maxFee": "0.0002", "mainNet": True}
                    for c in sorted(state.balances)])
    if route == ("POST", "trade/order"):
        return _each(state, [p] if isinstance(p, dict) else None, _place, single=True)
    if route == ("POST", "trade/batch-orders"):
        return _each(state, p if isinstance(p, list) else None, _place, single=False)
    if route == ("POST", "trade/cancel-order"):
        return _each(state, [p] if isinstance(p, dict) else None, _cancel, single=True)
    if route == ("POST", "trade/cancel-batch-orders"):
        return _each(state, p if isinstance(p, list) else None, _cancel, single=False)
    if route == ("GET", "trade/order"):
        order = _find(state, p)
        if order is None:
            return {"code": "51603", "msg": "Order does not exist", "data": []}
        return _ok([_public_order(order)])
    if route in (("GET", "trade/orders-pending"), ("GET", "trade/orders-history")):
        pending = path.endswith("pending")
        return _ok([_public_order(o) for o in state.orders.values()
                    if (o["state"] == "live") == pending
                    and p.get("instId") in (None, o["instId"])])
    if route == ("POST", "asset/withdrawal"):
        return _ok([{"amt": "1", "wdId": "67485", "ccy": "BTC", "chain": "BTC-Bitcoin"}])
    raise _Reject("50014", "Endpoint request timeout.", status=404)


def _balance(state: OkxState) -> dict[str, Any]:
    details = []
    for ccy, total in sorted(state.balances.items()):
        frozen = sum((o["_locked"] for o in state.orders.values()
                      if o["state"] == "live" and o["_lock_ccy"] == ccy), Decimal(0))
        details.append({"ccy": ccy, "eq": str(total), "cashBal": str(total),
                        "availBal": str(total - frozen), "availEq": str(total - frozen),
                        "frozenBal": str(frozen), "ordFrozen": str(frozen), "eqUsd": "0",
                        "uTime": str(state.now_ms())})
    return {"totalEq": "0", "uTime": str(state.now_ms()), "details": details}


def _each(state: OkxState, items: list[Any] | None,
          one: Callable[[OkxState, dict[str, Any]], dict[str, Any]], single: bool,
          ) -> dict[str, Any]:
    if items is None or not 1 <= len(items) <= 20 or not all(isinstance(i, dict) for i in items):
        raise _Reject("50000", "Body for POST request cannot be empty.", status=400)
    data, failed = [], 0
    for item in items:
        try:
            data.append({**one(state, item), "sCode": "0", "sMsg": "", "ts": str(state.now_ms())})
        except _OrderError as err:
            failed += 1
            data.append({"clOrdId": item.get("clOrdId", ""), "ordId": item.get("ordId", ""),
                         "tag": "", "sCode": err.code, "sMsg": err.msg, "ts": str(state.now_ms())})
    if failed == 0:
        return {"code": "0", "msg": "", "data": data}
    if failed == len(items):
        return {"code": "1", "msg": "All operations failed" if not single else
                "Operation failed.", "data": data}
    return {"code": "2", "msg": "Bulk operation partially succeeded.", "data": data}


def _dec(p: dict[str, Any], key: str) -> Decimal | None:
    value = p.get(key)
    if value is None:
        return None
    try:
        out = Decimal(value) if isinstance(value, str) else Decimal("NaN")
    except InvalidOperation:
        out = Decimal("NaN")
    if not out.is_finite() or out <= 0:
        raise _OrderError("51000", f"Parameter {key} error")
    return out


def _place(state: OkxState, p: dict[str, Any]) -> dict[str, Any]:
    inst = p.get("instId")
    if inst in CONTRACTS:
        return _place_contract(state, p, inst)
    if inst not in INSTRUMENTS:
        raise _OrderError("51001", "Instrument ID does not exist")
    side, otype = p.get("side"), p.get("ordType")
    if side not in ("buy", "sell") or otype not in ("limit", "market", "post_only", "ioc", "fok"):
        raise _OrderError("51000", "Parameter side or ordType error")
    if p.get("tdMode") != "cash":
        raise _OrderError("51000", "Parameter tdMode error")
    coid = p.get("clOrdId", "")
    if coid and (not isinstance(coid, str) or not _CL_ORD_ID.fullmatch(coid)):
        raise _OrderError("51000", "Parameter clOrdId error")
    if coid and any(o["clOrdId"] == coid for o in state.orders.values()):
        raise _OrderError("51016", "Duplicated clOrdId")
    size, price = _dec(p, "sz"), _dec(p, "px")
    if size is None or (otype != "market" and price is None):
        raise _OrderError("51000", "Parameter sz or px error")
    base, quote, ref = INSTRUMENTS[inst]
    target = p.get("tgtCcy") or ("quote_ccy" if side == "buy" else "base_ccy")
    if otype == "market":
        price = ref
        base_sz = (size / ref).quantize(Decimal("0.00000001")) if target == "quote_ccy" else size
    else:
        base_sz = size
    assert price is not None
    cost = base_sz * price
    lock_ccy, lock = (quote, cost) if side == "buy" else (base, base_sz)
    if state.balances.get(lock_ccy, Decimal(0)) < lock:
        raise _OrderError("51008", "Order failed. Insufficient balance.")
    filled = otype == "market"
    if filled:
        state.balances[lock_ccy] -= lock
        gain_ccy, gain = (base, base_sz) if side == "buy" else (quote, cost)
        state.balances[gain_ccy] = state.balances.get(gain_ccy, Decimal(0)) + gain
    ord_id = str(next(state._ids))
    now = str(state.now_ms())
    state.orders[ord_id] = {
        "instType": "SPOT", "instId": inst, "ordId": ord_id, "clOrdId": coid,
        "tag": p.get("tag", ""), "px": "" if filled else str(price), "sz": str(size),
        "ordType": otype, "side": side, "posSide": "net", "tdMode": "cash",
        "tgtCcy": p.get("tgtCcy", ""), "accFillSz": str(base_sz if filled else 0),
        "fillPx": str(price) if filled else "", "fillSz": str(base_sz if filled else 0),
        "avgPx": str(price) if filled else "", "state": "filled" if filled else "live",
        "fee": "0", "feeCcy": quote, "lever": "", "reduceOnly": "false", "cancelSource": "",
        "category": "normal", "cTime": now, "uTime": now, "fillTime": now if filled else "",
        "_locked": Decimal(0) if filled else lock, "_lock_ccy": lock_ccy,
    }
    passphrase_stream.order_event(state.streams, state.orders[ord_id], "SPOT")
    return {"ordId": ord_id, "clOrdId": coid, "tag": p.get("tag", "")}


def _place_contract(state: OkxState, p: dict[str, Any], inst: str) -> dict[str, Any]:
    """A SWAP or FUTURES order: sz is a whole number of contracts, tdMode cross or isolated;
    the order rests (limit) or fills at the reference price (market), margin not modelled."""
    side, otype = p.get("side"), p.get("ordType")
    if side not in ("buy", "sell") or otype not in ("limit", "market", "post_only", "ioc", "fok"):
        raise _OrderError("51000", "Parameter side or ordType error")
    if p.get("tdMode") not in ("cross", "isolated"):
        raise _OrderError("51000", "Parameter tdMode error")
    if "tgtCcy" in p:
        raise _OrderError("51000", "Parameter tgtCcy error")
    coid = p.get("clOrdId", "")
    if coid and (not isinstance(coid, str) or not _CL_ORD_ID.fullmatch(coid)):
        raise _OrderError("51000", "Parameter clOrdId error")
    if coid and any(o["clOrdId"] == coid for o in state.orders.values()):
        raise _OrderError("51016", "Duplicated clOrdId")
    size, price = _dec(p, "sz"), _dec(p, "px")
    if size is None or size != size.to_integral_value() or (otype != "market" and price is None):
        raise _OrderError("51000", "Parameter sz or px error")
    filled = otype == "market"
    px = CONTRACTS[inst][6] if price is None else price
    ord_id = str(next(state._ids))
    now = str(state.now_ms())
    state.orders[ord_id] = {
        "instType": CONTRACTS[inst][0], "instId": inst, "ordId": ord_id, "clOrdId": coid,
        "tag": p.get("tag", ""), "px": "" if filled else str(price), "sz": str(size),
        "ordType": otype, "side": side, "posSide": "net", "tdMode": p["tdMode"], "tgtCcy": "",
        "accFillSz": str(size if filled else 0), "fillPx": str(px) if filled else "",
        "fillSz": str(size if filled else 0), "avgPx": str(px) if filled else "",
        "state": "filled" if filled else "live", "fee": "0", "feeCcy": CONTRACTS[inst][5],
        "lever": "", "reduceOnly": "false", "cancelSource": "", "category": "normal",
        "cTime": now, "uTime": now, "fillTime": now if filled else "",
        "_locked": Decimal(0), "_lock_ccy": "", "_notional": order_notional(inst, size, px),
    }
    return {"ordId": ord_id, "clOrdId": coid, "tag": p.get("tag", "")}


def _find(state: OkxState, p: dict[str, Any]) -> dict[str, Any] | None:
    for order in state.orders.values():
        if order["instId"] != p.get("instId"):
            continue
        if ("ordId" in p and order["ordId"] == p["ordId"]) or (
            "clOrdId" in p and order["clOrdId"] == p["clOrdId"]
        ):
            return order
    return None


def _cancel(state: OkxState, p: dict[str, Any]) -> dict[str, Any]:
    if "ordId" not in p and "clOrdId" not in p:
        raise _OrderError("51000", "Parameter ordId error")
    order = _find(state, p)
    if order is None or order["state"] != "live":
        raise _OrderError("51400", "Order cancellation failed as the order has been filled, "
                                   "canceled or does not exist.")
    order.update(state="canceled", _locked=Decimal(0), uTime=str(state.now_ms()))
    passphrase_stream.order_event(state.streams, order, "SPOT")
    return {"ordId": order["ordId"], "clOrdId": order["clOrdId"]}


def _public_order(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if not k.startswith("_")}
