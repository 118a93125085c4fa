"""The Coinbase emulator's futures products, as Coinbase's public product endpoint describes
them (product_type FUTURE, future_product_details.contract_size)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

#: Futures products (Coinbase Financial Markets): base_size counts contracts of
#: future_product_details.contract_size base units (BIT is the 0.01 BTC "nano Bitcoin").
FUTURES = {
    "BIT-26DEC25-CDE": ("BTC", "USD", Decimal("0.01"), Decimal("50000")),
}

def future_json(product_id: str) -> dict[str, Any]:
    base, quote, size, price = FUTURES[product_id]
    return {
        "product_id": product_id, "price": str(price), "base_increment": "1",
        "quote_increment": "5", "base_min_size": "1", "base_max_size": "5000", "base_name": "",
        "quote_name": quote, "status": "", "trading_disabled": False, "product_type": "FUTURE",
        "quote_currency_id": quote, "base_currency_id": "", "alias": "", "alias_to": [],
        "display_name": product_id, "product_venue": "FCM", "price_increment": "5",
        "future_product_details": {
            "venue": "cde", "contract_code": product_id.partition("-")[0], "contract_size": str(size),
            "contract_root_unit": base, "group_description": f"{base} nano futures",
            "contract_expiry_type": "EXPIRING", "risk_managed_by": "MANAGED_BY_FCM",
        },
    }


def order_notional(product_id: str, base_size: Decimal, price: Decimal) -> Decimal:
    """What an order is worth in quote units, from this emulator's tables: a spot base_size is
    base units, a futures base_size is contracts of contract_size base units."""
    size = FUTURES[product_id][2] if product_id in FUTURES else Decimal(1)
    return base_size * size * price


def place_future(
    orders: dict[str, dict[str, Any]], order_id: str, req: Mapping[str, Any],
) -> dict[str, Any] | None:
    """A futures order as Coinbase takes one here: ``limit_limit_gtc`` with a whole number of
    contracts as ``base_size``; it rests (margin is not modelled). The success answer, or
    None when malformed."""
    config = req.get("order_configuration")
    fields = config.get("limit_limit_gtc") if isinstance(config, dict) and len(config) == 1 else None
    try:
        size, price = Decimal(str(fields["base_size"])), Decimal(str(fields["limit_price"]))  # type: ignore[index]
    except (KeyError, TypeError, ArithmeticError):
        return None
    if not size.is_finite() or size <= 0 or size != size.to_integral_value() or not price > 0:
        return None
    product = str(req["product_id"])
    orders[order_id] = order = {
        "order_id": order_id, "product_id": product, "user_id": "emulator-user",
        "order_configuration": config, "side": req.get("side"), "client_order_id": req.get("client_order_id"),
        "status": "OPEN", "time_in_force": "GOOD_UNTIL_CANCELLED", "order_type": "LIMIT",
        "product_type": "FUTURE", "filled_size": "0", "average_filled_price": "0",
        "_notional": order_notional(product, size, price),
    }
    summary = {k: order[k] for k in ("order_id", "product_id", "side", "client_order_id")}
    return {"success": True, "success_response": summary, "order_configuration": config}
