"""Reading a key's permissions from each exchange's documented answer."""

from __future__ import annotations

import json

import pytest

from proxy.key_permissions import Permissions, parse_answer


def _b(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(("exchange", "answer", "expected"), [
    ("binance", {"ipRestrict": False, "enableWithdrawals": True, "enableReading": True}, Permissions(True, False)),
    ("binance", {"ipRestrict": True, "enableWithdrawals": False}, Permissions(False, True)),
    ("bybit", {"retCode": 0, "result": {"readOnly": 0, "ips": ["*"],
                                        "permissions": {"Spot": ["SpotTrade"], "Wallet": ["AccountTransfer", "Withdraw"]}}},
     Permissions(True, False)),
    ("bybit", {"retCode": 0, "result": {"ips": ["10.0.0.1"], "permissions": {"Spot": ["SpotTrade"], "Wallet": []}}},
     Permissions(False, True)),
    ("okx", {"code": "0", "data": [{"perm": "read_only,withdraw,trade"}]}, Permissions(True)),
    ("okx", {"code": "0", "data": [{"perm": "read_only,trade"}]}, Permissions(False)),
    ("coinbase", {"can_view": True, "can_trade": True, "can_transfer": True}, Permissions(True)),
    ("coinbase", {"can_view": True, "can_trade": True, "can_transfer": False}, Permissions(False)),
])
def test_parse_answer(exchange: str, answer: object, expected: Permissions) -> None:
    assert parse_answer(exchange, 200, _b(answer)) == expected


@pytest.mark.parametrize(("exchange", "status", "body"), [
    ("binance", 200, b"{}"),
    ("binance", 200, _b({"enableWithdrawals": "false"})),  # not a boolean: never guess
    ("binance", 401, _b({"code": -2015, "msg": "Invalid API-key"})),
    ("okx", 200, _b({"code": "50113", "msg": "Invalid Sign", "data": []})),
    ("bybit", 200, _b({"retCode": 10003, "retMsg": "API key is invalid."})),
    ("coinbase", 200, b"not json"),
])
def test_unreadable_answers_are_errors(exchange: str, status: int, body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_answer(exchange, status, body)
