"""The exchange's reason, not just its status: when the exchange refuses a key (here a rotation
to a key the exchange does not know), the log, /readyz and ``keys status`` carry the exchange's
own error code and message; /readyz stays 200 and says, per account, that it cannot sign."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.stack import AccountSpec, Stack, start_stack

FIELDS = {"api_key": "reasonKey0123456789", "api_secret": "r" * 64}
POLICY = """
version = 1
client = "reason-bot"

[[grants]]
account = "binance-main"
allow = ["read"]
"""
UNKNOWN = "-2015 Invalid API-key, IP, or permissions for action."  # what Binance answers


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("reasons"), [AccountSpec("binance-main", "binance", FIELDS)],
                     {"reason-bot": POLICY}) as s:
        yield s


def _account(stack: Stack) -> tuple[int, dict[str, Any]]:
    status, body = stack.readyz()
    return status, body["accounts"]["binance-main"]


def _status_line(stack: Stack) -> dict[str, Any]:
    out = stack.cli("keys", "status")
    assert out.returncode == 0, out.stderr
    (line,) = [json.loads(x) for x in out.stdout.splitlines()]
    assert isinstance(line, dict)
    return line


def test_exchange_reason_for_a_refused_key_in_log_readyz_and_keys_status(stack: Stack) -> None:
    status, account = _account(stack)
    assert status == 200 and account["can_sign"] is True, account
    assert "checked with binance: cannot withdraw" in account["exchange_verdict"]
    assert _status_line(stack)["exchange"]["can_sign"] is True

    # a new key the exchange does not know (the emulator knows only the first one)
    rotate = stack.cli("keys", "rotate", "--account", "binance-main", "--skip-exchange-check",
                       stdin=json.dumps({"api_key": "unknownKey0123456789", "api_secret": "u" * 64}))
    assert rotate.returncode == 0, rotate.stderr
    deadline = time.monotonic() + 20
    while _account(stack)[1]["can_sign"]:
        assert time.monotonic() < deadline, "the refused key was not reported"
        time.sleep(0.2)
    status, account = _account(stack)
    assert status == 200, "one stopped account must not take the instance out of a load balancer"
    assert UNKNOWN in account["why"] and account["key_version"] == 2, account
    assert UNKNOWN in stack.proxy_log()
    seen = _status_line(stack)["exchange"]
    assert seen["can_sign"] is False and UNKNOWN in seen["why"], seen


def test_keys_status_without_a_running_proxy_says_so(stack: Stack) -> None:
    stack.stop_proxy()
    try:
        verdict = _status_line(stack)["exchange"]["exchange_verdict"]
        assert verdict.startswith("unknown: no proxy answers on http://127.0.0.1:"), verdict
    finally:
        stack.start_proxy()
        stack.wait_ready()
