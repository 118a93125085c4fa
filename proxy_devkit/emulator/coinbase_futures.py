"""The Coinbase emulator's futures products, as Coinbase's public product endpoint describes
them (product_type FUTURE, future_product_details.contract_size)."""

from __future__ import annotations

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
