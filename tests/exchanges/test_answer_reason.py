"""Each exchange module reads the exchange's own error code and message from its error shape
(as docs/exchanges.md records them), for logs, /readyz and ``keys status``."""

from __future__ import annotations

import json

import pytest

from proxy import exchanges


def _j(value: object) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(("exchange", "body", "reason"), [
    ("binance", _j({"code": -1022, "msg": "Signature for this request is not valid."}),
     "-1022 Signature for this request is not valid."),
    ("bybit", _j({"retCode": 10004, "retMsg": "Error sign, please check your signature generation algorithm.",
                  "result": {}}), "10004 Error sign, please check your signature generation algorithm."),
    ("okx", _j({"code": "50113", "msg": "Invalid Sign", "data": []}), "50113 Invalid Sign"),
    ("okx", _j({"code": "1", "msg": "", "data": [{"sCode": "51008", "sMsg": "Insufficient balance"}]}),
     "51008 Insufficient balance"),
    ("bitget", _j({"code": "40009", "msg": "sign signature error", "data": None}), "40009 sign signature error"),
    ("bitstamp", _j({"status": "error", "reason": "Invalid nonce", "code": "API0004"}), "API0004 Invalid nonce"),
    ("bitstamp", _j({"status": "error", "reason": {"__all__": ["Minimum order size is 5.0 EUR."]}}),
     "Minimum order size is 5.0 EUR."),
    ("bitfinex", _j(["error", 10114, "nonce: small"]), "10114 nonce: small"),
    ("kraken", _j({"error": ["EAPI:Invalid nonce"], "result": {}}), "EAPI:Invalid nonce"),
    ("coinbase", _j({"error": "PERMISSION_DENIED", "message": "Missing required scopes"}),
     "PERMISSION_DENIED Missing required scopes"),
    ("coinbase", _j({"errors": [{"id": "not_found", "message": "Not found"}]}), "not_found Not found"),
    ("deribit", _j({"jsonrpc": "2.0", "error": {"code": 13009, "message": "unauthorized"}}), "13009 unauthorized"),
])
def test_answer_reason_reads_the_exchanges_own_words(exchange: str, body: bytes, reason: str) -> None:
    assert exchanges.get(exchange).capabilities.errors.reason(body) == reason
    assert exchanges.answer_reason(exchange, 400, body) == f"HTTP 400: {reason}"


@pytest.mark.parametrize("exchange", exchanges.NAMES)
@pytest.mark.parametrize("body", [b"", b"<html>502</html>", b"[]", b"{}", b'"text"', b"\xff"])
def test_answer_reason_of_something_else_is_the_status_alone(exchange: str, body: bytes) -> None:
    assert exchanges.answer_reason(exchange, 502, body) == "HTTP 502"


def test_answer_reason_is_one_short_line() -> None:
    body = _j({"code": -1, "msg": "line one\nline two\x00" + "x" * 500})
    reason = exchanges.get("binance").capabilities.errors.reason(body)
    assert reason is not None and "\n" not in reason and "\x00" not in reason and len(reason) <= 200
