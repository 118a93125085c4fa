"""The OKX emulator's SWAP and FUTURES contracts, as OKX's /api/v5/public/instruments
describes them (ctType, ctVal, ctMult, ctValCcy)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

#: SWAP and FUTURES contracts as OKX's /api/v5/public/instruments describes them:
#: instId -> (instType, ctType, ctVal, ctMult, ctValCcy, settleCcy, reference price).
#: DOGE-USDT-SWAP is 1,000 DOGE a contract and BTC-USD-SWAP 100 USD a contract (OKX's live
#: values); BTC-USDT-SWAP 0.01 BTC.
CONTRACTS = {
    "DOGE-USDT-SWAP": ("SWAP", "linear", Decimal("1000"), Decimal("1"), "DOGE", "USDT", Decimal("0.1")),
    "BTC-USDT-SWAP": ("SWAP", "linear", Decimal("0.01"), Decimal("1"), "BTC", "USDT", Decimal("50000")),
    "BTC-USD-SWAP": ("SWAP", "inverse", Decimal("100"), Decimal("1"), "USD", "BTC", Decimal("50000")),
}

def contract_json(inst: str) -> dict[str, Any]:
    kind, ct_type, ct_val, ct_mult, ct_ccy, settle, _ = CONTRACTS[inst]
    return {
        "alias": "", "baseCcy": "", "category": "1", "ctMult": str(ct_mult), "ctType": ct_type,
        "ctVal": str(ct_val), "ctValCcy": ct_ccy, "expTime": "", "instFamily": inst.rsplit("-", 1)[0],
        "instId": inst, "instType": kind, "lever": "100", "listTime": "1606468572000", "lotSz": "1",
        "maxIcebergSz": "100000000", "maxLmtAmt": "20000000", "maxLmtSz": "100000000",
        "maxMktAmt": "", "maxMktSz": "12000", "maxStopSz": "12000", "maxTriggerSz": "100000000",
        "maxTwapSz": "100000000", "minSz": "1", "optType": "", "quoteCcy": "", "settleCcy": settle,
        "state": "live", "stk": "", "tickSz": "0.00001", "uly": inst.rsplit("-", 1)[0],
        "ruleType": "normal",
    }


def contract_notional(inst: str, sz: Decimal, px: Decimal) -> Decimal:
    """What ``sz`` contracts at ``px`` are worth in quote (USD) units: a linear contract is
    ctVal x ctMult base units, an inverse one ctVal x ctMult USD."""
    _, ct_type, ct_val, ct_mult, _, _, _ = CONTRACTS[inst]
    return sz * ct_val * ct_mult if ct_type == "inverse" else sz * ct_val * ct_mult * px
