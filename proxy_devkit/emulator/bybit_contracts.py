"""The Bybit emulator's linear and inverse contracts, as Bybit's /v5/market/instruments-info
describes them (contractType, coins, lot size)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

#: Linear and inverse contracts, as /v5/market/instruments-info describes them:
#: (category, symbol) -> (contractType, baseCoin, quoteCoin, settleCoin, reference price).
#: BYB-ORDER qty: linear contracts count the base coin, inverse contracts count USD.
CONTRACTS = {
    ("linear", "BTCUSDT"): ("LinearPerpetual", "BTC", "USDT", "USDT", Decimal("50000")),
    ("linear", "ETHUSDT"): ("LinearPerpetual", "ETH", "USDT", "USDT", Decimal("3000")),
    ("inverse", "BTCUSD"): ("InversePerpetual", "BTC", "USD", "BTC", Decimal("50000")),
}

def contract_json(category: str | None, symbol: str) -> dict[str, Any]:
    kind, base, quote, settle, _ = CONTRACTS[(str(category), symbol)]
    return {
        "symbol": symbol, "contractType": kind, "status": "Trading", "baseCoin": base,
        "quoteCoin": quote, "settleCoin": settle, "launchTime": "1585526400000",
        "deliveryTime": "0", "deliveryFeeRate": "", "priceScale": "2",
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
        "lotSizeFilter": {"maxOrderQty": "1000000" if category == "inverse" else "1190.000",
                          "minOrderQty": "1" if category == "inverse" else "0.001",
                          "qtyStep": "1" if category == "inverse" else "0.001"},
        "unifiedMarginTrade": True, "fundingInterval": 480, "isPreListing": False,
    }


def order_notional(category: str, symbol: str, qty: Decimal, price: Decimal) -> Decimal:
    """What an order is worth in quote (USD) units, from this emulator's own tables: spot and
    linear qty is base coin, inverse qty is USD."""
    if category == "inverse":
        return qty
    return qty * price
