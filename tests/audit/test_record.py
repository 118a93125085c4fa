"""The defensive check that keeps secret-looking material out of the trail."""

from __future__ import annotations

import pytest

from proxy.audit.record import check_record
from proxy.errors import UnsafeAuditRecord
from proxy.model.sensitive import Secret


@pytest.mark.parametrize(
    "record",
    [
        {"signature": "x"},
        {"X-MBX-APIKEY": "x"},
        {"intent": {"token": "x"}},
        {"headers": [{"Authorization": "Bearer x"}]},
        {"api_secret": "x"},
        {"passphrase": "x"},
        {"value": Secret("x")},
        {"_seq": 1},
        {"_mac": "x"},
    ],
)
def test_check_record_refuses_secret_keys_values_and_reserved(record: dict[str, object]) -> None:
    with pytest.raises(UnsafeAuditRecord):
        check_record(record)


def test_check_record_accepts_contract_fields() -> None:
    check_record({
        "ts": "2024-01-01T00:00:00Z", "request_id": "r", "client": "c", "key_version": 3,
        "client_order_id": "abc", "intent": {"symbol": "BTCUSDT", "quantity": "1"},
        "nonce": 17, "upstream_status": None,
    })
