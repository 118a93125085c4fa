"""A strict Coinbase Advanced Trade emulator (docs/exchanges.md §8), independent of the proxy's signer.

Checks, as the CDP docs describe: ``Authorization: Bearer <JWT>`` verified with the key's
public half (ES256 or EdDSA, the algorithm fixed by the key, never by the token); ``kid`` and
``sub`` name a known key; ``uri`` (or ``uris``) is ``METHOD host/path`` for the Host actually
received; ``nbf <= now < exp`` and a lifetime of at most 120 s. Deliberately stricter than
documented: a JWT ``nonce`` is single use while the token lives, so a replayed token fails.
Failures are HTTP 401 with the body ``Unauthorized`` (Coinbase's body text is UNVERIFIED).

Keeps an in-memory account: balances, create/get/list/batch-cancel orders. A reused
``client_order_id`` creates nothing and returns the existing order, as Coinbase documents.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from proxy_devkit.emulator.coinbase_futures import FUTURES, future_json, place_future
from proxy_devkit.emulator.coinbase_jwt import public_key_of as _public_key_of
from proxy_devkit.emulator.coinbase_jwt import verify_token
from proxy_devkit.emulator.coinbase_stream import order_event, user_stream
from proxy_devkit.emulator.recorder import Received
from proxy_devkit.emulator.state import EmulatorState

PRODUCTS = {
    "BTC-USD": ("BTC", "USD", Decimal("50000")),
    "ETH-USD": ("ETH", "USD", Decimal("3000")),
    "SOL-USD": ("SOL", "USD", Decimal("150")),
}


@dataclass
class CoinbaseKey:
    """A CDP key as the emulator knows it: its name and public key."""

    name: str
    algorithm: str  # "ES256" | "EdDSA"
    public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


@dataclass
class CoinbaseState(EmulatorState):
    keys: dict[str, CoinbaseKey] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(
        default_factory=lambda: {
            "USD": Decimal("100000"), "BTC": Decimal("2"), "ETH": Decimal("10")}
    )
    holds: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    order_holds: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    seen_nonces: dict[str, int] = field(default_factory=dict)
    #: what GET /api/v3/brokerage/key_permissions answers for can_transfer
    can_transfer: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def now(self) -> int:
        return self.now_ms() // 1000


class _Reject(Exception):
    def __init__(self, status: int, body: Any, reason: str) -> None:
        super().__init__(reason)
        self.status, self.body, self.reason = status, body, reason


def _unauthorized(reason: str) -> _Reject:
    return _Reject(401, None, reason)


def _error(status: int, error: str, message: str) -> _Reject:
    return _Reject(status, {"error": error, "error_details": message, "message": message}, error)


def create(keys: Mapping[str, Mapping[str, str]]) -> tuple[CoinbaseState, Starlette]:
    """An emulator knowing ``keys``: key name -> Vault-style fields (``api_secret`` an EC PEM
    or a base64 Ed25519 secret; the emulator keeps only the public half)."""
    state = CoinbaseState()
    for name, fields in keys.items():
        algorithm, public = _public_key_of(fields["api_secret"])
        state.keys[name] = CoinbaseKey(name, algorithm, public)
    return state, create_app(state)


def create_app(state: CoinbaseState) -> Starlette:
    """The emulator's ASGI app over ``state``."""

    async def handle(request: Request) -> Response:
        body = await request.body()
        raw_query = request.scope.get("query_string", b"").decode("latin-1")
        headers = tuple(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]
        )
        path, method = request.url.path, request.method
        try:
            result = _dispatch(state, request, method, path, body)
        except _Reject as rej:
            state.recorder.add(Received(method, path, raw_query, headers, body, False, rej.reason))
            if rej.body is None:
                return PlainTextResponse("Unauthorized\n", status_code=rej.status)
            return JSONResponse(rej.body, status_code=rej.status)
        state.recorder.add(Received(method, path, raw_query, headers, body, True))
        return JSONResponse(result)

    async def stream(ws: WebSocket) -> None:
        await user_stream(state, ws)

    return Starlette(routes=[WebSocketRoute("/", stream),
                             Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE"])])


def _dispatch(state: CoinbaseState, request: Request, method: str, path: str, body: bytes) -> Any:
    public = _public(state, method, path, request)
    if public is not None:
        return public
    _authenticate(state, request, method, path)
    with state.lock:
        return _private(state, method, path, request, body)


def _authenticate(state: CoinbaseState, request: Request, method: str, path: str) -> None:
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer ") or auth.count(" ") != 1:
        raise _unauthorized("missing bearer token")
    reason = verify_token(state, auth[len("Bearer "):], f"{method} {request.headers.get('host', '')}{path}")
    if reason is not None:
        raise _unauthorized(reason)


def _product(product_id: str) -> dict[str, Any]:
    base, quote, price = PRODUCTS[product_id]
    return {
        "product_id": product_id, "price": str(price), "price_percentage_change_24h": "0",
        "volume_24h": "1000", "volume_percentage_change_24h": "0", "base_increment": "0.00000001",
        "quote_increment": "0.01", "quote_min_size": "1", "quote_max_size": "150000000",
        "base_min_size": "0.00000001", "base_max_size": "3400", "base_name": base,
        "quote_name": quote, "watched": False, "is_disabled": False, "new": False,
        "status": "online", "cancel_only": False, "limit_only": False, "post_only": False,
        "trading_disabled": False, "auction_mode": False, "product_type": "SPOT",
        "quote_currency_id": quote, "base_currency_id": base, "fcm_trading_session_details": None,
        "mid_market_price": "", "alias": "", "alias_to": [], "base_display_symbol": base,
        "quote_display_symbol": quote, "view_only": False, "price_increment": "0.01",
        "display_name": product_id, "product_venue": "CBE",
    }


def _public(state: CoinbaseState, method: str, path: str, request: Request) -> Any:
    if method != "GET":
        return None
    now = state.now()
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    if path == "/api/v3/brokerage/time":
        return {"iso": iso, "epochSeconds": str(now), "epochMillis": str(state.now_ms())}
    if path == "/v2/time":
        return {"data": {"iso": iso, "epoch": now}}
    if path == "/api/v3/brokerage/market/products":
        spot = request.query_params.get("product_type", "SPOT") == "SPOT"
        products = [_product(p) for p in PRODUCTS] if spot else []
        return {"products": products, "num_products": len(products)}
    if path.startswith("/api/v3/brokerage/market/products/"):
        product_id = path.rsplit("/", 1)[1]
        if product_id in FUTURES:
            return future_json(product_id)
        if product_id not in PRODUCTS:
            raise _error(404, "NOT_FOUND", "product not found")
        return _product(product_id)
    if path == "/v2/currencies":
        return {"data": [{"id": "USD", "name": "US Dollar", "min_size": "0.01"}]}
    if path == "/v2/currencies/crypto":
        return {"data": [
            {"asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, c)), "code": c, "name": c,
             "color": "#000000", "sort_index": str(i), "exponent": 8, "type": "crypto",
             "address_regex": ".*"}
            for i, c in enumerate(("BTC", "ETH", "SOL"))
        ]}
    if path == "/v2/exchange-rates":
        rates = {b: str((Decimal(1) / p).quantize(Decimal("0.00000001")))
                 for b, _, p in PRODUCTS.values()}
        return {"data": {"currency": "USD", "rates": {"USD": "1", **rates}}}
    return None


def _account(currency: str, state: CoinbaseState) -> dict[str, Any]:
    hold = state.holds.get(currency, Decimal(0))
    available = state.balances.get(currency, Decimal(0)) - hold
    return {
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, currency)), "name": f"{currency} Wallet",
        "currency": currency, "available_balance": {"value": str(available), "currency": currency},
        "default": True, "active": True, "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z", "deleted_at": None, "type": "ACCOUNT_TYPE_CRYPTO",
        "ready": True, "hold": {"value": str(hold), "currency": currency},
        "retail_portfolio_id": "emulator-portfolio", "platform": "ACCOUNT_PLATFORM_CONSUMER",
    }


def _v2_account(currency: str, state: CoinbaseState) -> dict[str, Any]:
    account_id = str(uuid.uuid5(uuid.NAMESPACE_URL, currency))
    amount = str(state.balances.get(currency, Decimal(0)))
    return {
        "id": account_id, "name": f"{currency} Wallet", "primary": True, "type": "wallet",
        "currency": {"code": currency, "name": currency, "type": "crypto", "exponent": 8},
        "balance": {"amount": amount, "currency": currency},
        "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
        "resource": "account", "resource_path": f"/v2/accounts/{account_id}",
        "allow_deposits": True, "allow_withdrawals": True,
    }


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise _error(400, "INVALID_ARGUMENT", "body is not valid JSON") from None


def _private(
    state: CoinbaseState, method: str, path: str, request: Request, body: bytes
) -> Any:
    base = "/api/v3/brokerage"
    if (method, path) == ("GET", f"{base}/key_permissions"):
        return {"can_view": True, "can_trade": True, "can_transfer": state.can_transfer,
                "portfolio_uuid": "8bd8c5b1-6d23-4a39-9d61-3c5e6b1e6c7a", "portfolio_type": "DEFAULT"}
    if (method, path) == ("GET", f"{base}/accounts"):
        accounts = [_account(c, state) for c in sorted(state.balances)]
        return {"accounts": accounts, "has_next": False, "cursor": "", "size": len(accounts)}
    if (method, path) == ("GET", "/v2/accounts"):
        return {
            "pagination": {"ending_before": None, "starting_after": None,
                           "previous_ending_before": None, "next_starting_after": None,
                           "limit": 250, "order": "desc", "previous_uri": None, "next_uri": None},
            "data": [_v2_account(c, state) for c in sorted(state.balances)],
        }
    if (method, path) == ("GET", f"{base}/transaction_summary"):
        return {
            "total_volume": 0, "total_fees": 0, "fee_tier": {
                "pricing_tier": "Advanced 1", "usd_from": "0", "usd_to": "1000",
                "taker_fee_rate": "0.008", "maker_fee_rate": "0.006", "aop_from": "", "aop_to": ""},
            "margin_rate": None, "goods_and_services_tax": None,
            "advanced_trade_only_volume": 0, "advanced_trade_only_fees": 0,
            "coinbase_pro_volume": 0, "coinbase_pro_fees": 0,
        }
    if (method, path) == ("POST", f"{base}/orders"):
        return _create_order(state, _json_body(body))
    if (method, path) == ("POST", f"{base}/orders/batch_cancel"):
        return _cancel(state, _json_body(body))
    if (method, path) == ("GET", f"{base}/orders/historical/batch"):
        statuses = request.query_params.getlist("order_status")
        products = request.query_params.getlist("product_ids")
        if "product_id" in request.query_params:
            products.append(request.query_params["product_id"])
        orders = [o for o in state.orders.values()
                  if (not statuses or o["status"] in statuses)
                  and (not products or o["product_id"] in products)]
        return {"orders": orders, "sequence": "0", "has_next": False, "cursor": ""}
    if method == "GET" and path.startswith(f"{base}/orders/historical/"):
        order = state.orders.get(path.rsplit("/", 1)[1])
        if order is None:
            raise _error(404, "NOT_FOUND", "order with this orderID was not found")
        return {"order": order}
    if method == "POST" and path.startswith("/v2/accounts/") and path.endswith("/transactions"):
        return {"data": {"id": "emulated-send", "type": "send", "status": "pending"}}  # canary
    raise _error(404, "NOT_FOUND", "Not Found")


def _failure(error: str, message: str) -> dict[str, Any]:
    return {
        "success": False, "failure_reason": "UNKNOWN_FAILURE_REASON", "order_id": "",
        "error_response": {"error": error, "message": message, "error_details": "",
                           "preview_failure_reason": f"PREVIEW_{error}"},
    }


def _create_order(state: CoinbaseState, req: Any) -> dict[str, Any]:
    if not isinstance(req, dict):
        raise _error(400, "INVALID_ARGUMENT", "body must be an object")
    coid, product_id, side = req.get("client_order_id"), req.get("product_id"), req.get("side")
    config = req.get("order_configuration")
    if not isinstance(coid, str) or not coid:
        raise _error(400, "INVALID_ARGUMENT", "client_order_id is required")
    if len(coid) > 128 or not all(c.isascii() and (c.isalnum() or c in "._:-") for c in coid):
        raise _error(400, "INVALID_ARGUMENT", "client_order_id: invalid")
    for existing in state.orders.values():
        if existing["client_order_id"] == coid:  # Coinbase: return the existing order
            return {"success": True, "success_response": _summary(existing),
                    "order_configuration": existing["order_configuration"]}
    if product_id in FUTURES and side in ("BUY", "SELL"):
        placed = place_future(state.orders, str(uuid.UUID(int=next(state._ids))), req)
        return placed or _failure("INVALID_ORDER_CONFIGURATION", "futures: limit_limit_gtc, whole contracts")
    if product_id not in PRODUCTS:
        return _failure("UNKNOWN_FAILURE_REASON", "Invalid product_id")
    if side not in ("BUY", "SELL"):
        raise _error(400, "INVALID_ARGUMENT", "side must be BUY or SELL")
    if not isinstance(config, dict) or len(config) != 1:
        return _failure("INVALID_ORDER_CONFIGURATION", "order_configuration is invalid")
    ((kind, fields),) = config.items()
    base, quote, ref = PRODUCTS[product_id]
    if not isinstance(fields, dict) or any(
        not isinstance(fields.get(k, ""), str) for k in ("base_size", "quote_size", "limit_price")
    ):
        return _failure("INVALID_ORDER_CONFIGURATION", "sizes must be decimal strings")
    try:
        size = Decimal(fields["base_size"]) if "base_size" in fields else None
        quote_size = Decimal(fields["quote_size"]) if "quote_size" in fields else None
        price = Decimal(fields["limit_price"]) if "limit_price" in fields else None
    except ArithmeticError:
        return _failure("INVALID_ORDER_CONFIGURATION", "sizes must be decimal strings")
    if kind == "market_market_ioc":
        if (size is None) == (quote_size is None):
            return _failure("INVALID_ORDER_CONFIGURATION", "send base_size or quote_size")
        size = size if size is not None else (quote_size or Decimal(0)) / ref
        price, order_type, tif, status = ref, "MARKET", "IMMEDIATE_OR_CANCEL", "FILLED"
    elif kind == "limit_limit_gtc":
        if size is None or price is None:
            return _failure("INVALID_ORDER_CONFIGURATION", "base_size and limit_price required")
        order_type, tif, status = "LIMIT", "GOOD_UNTIL_CANCELLED", "OPEN"
    else:
        return _failure("UNSUPPORTED_ORDER_CONFIGURATION", f"{kind} is not emulated")
    cost = size * price
    spend_asset, spend = (quote, cost) if side == "BUY" else (base, size)
    held = state.holds.get(spend_asset, Decimal(0))
    available = state.balances.get(spend_asset, Decimal(0)) - held
    if available < spend:
        return _failure("INSUFFICIENT_FUND", "Insufficient balance in source account")
    if status == "FILLED":
        state.balances[spend_asset] -= spend
        gain_asset, gain = (base, size) if side == "BUY" else (quote, cost)
        state.balances[gain_asset] = state.balances.get(gain_asset, Decimal(0)) + gain
    else:
        state.holds[spend_asset] = state.holds.get(spend_asset, Decimal(0)) + spend
    order_id = str(uuid.UUID(int=next(state._ids)))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.now()))
    filled = status == "FILLED"
    order = {
        "order_id": order_id, "product_id": product_id, "user_id": "emulator-user",
        "order_configuration": config, "side": side, "client_order_id": coid,
        "status": status, "time_in_force": tif, "created_time": created,
        "completion_percentage": "100" if filled else "0",
        "filled_size": str(size if filled else 0),
        "average_filled_price": str(price if filled else 0),
        "fee": "", "number_of_fills": "1" if filled else "0",
        "filled_value": str(cost if filled else 0), "pending_cancel": False,
        "size_in_quote": quote_size is not None, "total_fees": "0",
        "size_inclusive_of_fees": False, "total_value_after_fees": str(cost if filled else 0),
        "trigger_status": "INVALID_ORDER_TYPE", "order_type": order_type,
        "reject_reason": "REJECT_REASON_UNSPECIFIED", "settled": filled, "product_type": "SPOT",
        "reject_message": "", "cancel_message": "", "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": str(0 if filled else spend), "is_liquidation": False,
        "last_fill_time": created if filled else None, "edit_history": [], "leverage": "",
        "margin_type": "UNKNOWN_MARGIN_TYPE", "retail_portfolio_id": "emulator-portfolio",
    }
    state.orders[order_id] = order
    state.order_holds[order_id] = (spend_asset, Decimal(0) if filled else spend)
    order_event(state, order)
    return {"success": True, "success_response": _summary(order), "order_configuration": config}


def _summary(order: Mapping[str, Any]) -> dict[str, Any]:
    return {k: order[k] for k in ("order_id", "product_id", "side", "client_order_id")}


def _cancel(state: CoinbaseState, req: Any) -> dict[str, Any]:
    ids = req.get("order_ids") if isinstance(req, dict) else None
    if not isinstance(ids, list):
        raise _error(400, "INVALID_ARGUMENT", "order_ids is required")
    results = []
    for order_id in ids:
        order = state.orders.get(str(order_id))
        if order is None:
            results.append({"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER",
                            "order_id": str(order_id)})
            continue
        if order["status"] != "OPEN":
            results.append({"success": False, "failure_reason": "INVALID_CANCEL_REQUEST",
                            "order_id": order_id})
            continue
        order["status"] = "CANCELLED"
        asset, amount = state.order_holds.pop(order_id)
        state.holds[asset] = state.holds.get(asset, Decimal(0)) - amount
        order["outstanding_hold_amount"] = "0"
        order_event(state, order)
        results.append({"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON",
                        "order_id": order_id})
    return {"results": results}
