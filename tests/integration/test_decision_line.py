"""The one canonical decision line: each bot request logs one line naming the rule that decided
(not a fixed "grant"), its outcome record repeats its decision record's rule, and a lookup the
proxy makes after a lost answer is logged as such but not counted as a bot request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.stack import AccountSpec, Stack, start_stack

FIELDS = {"api_key": "lineKey0123456789", "api_secret": "l" * 64}
POLICIES = {
    "line-bot": """
version = 1
client = "line-bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT"]
max_order_qty = "0.5"
""",
    "report-bot": """
version = 1
client = "report-bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT"]
max_order_qty = "0.1"
mode = "report"
""",
}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("line"), [AccountSpec("binance-main", "binance", FIELDS)],
                     POLICIES, start_proxy=False) as s:
        s.edit_config("[server]\n", "[server]\nupstream_timeout_s = 1.0\n")
        s.start_proxy()
        s.wait_ready()
        yield s


def _call(stack: Stack, client: str, method: str, path: str, body: str = "") -> httpx.Response:
    return httpx.request(method, stack.proxy_url + "/x/binance-main" + path, content=body or None,
                         headers={"Proxy-Authorization": f"Bearer {stack.token(client)}", **FORM},
                         timeout=10)


def _order(quantity: str, coid: str, symbol: str = "BTCUSDT") -> str:
    return (f"symbol={symbol}&side=BUY&type=LIMIT&timeInForce=GTC&quantity={quantity}"
            f"&price=40000&newClientOrderId={coid}")


def _lines(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    found = []
    for raw in stack.proxy_log().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("logger") == "proxy.decision" and line.get("request_id") == request_id:
            found.append(line)
    return found


def _records(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    return [r for r in stack.audit_records() if r["request_id"] == request_id]


def _bot_requests(stack: Stack) -> float:
    return sum(v for labels, v in stack.metric("proxy_requests_total") if 'client="line-bot"' in labels)


@pytest.mark.parametrize(("client", "method", "path", "body", "rule"), [
    ("line-bot", "GET", "/api/v3/time", "", "public"),
    ("line-bot", "POST", "/api/v3/order", _order("0.01", "line-grant"), "grant"),
    ("report-bot", "POST", "/api/v3/order", _order("0.2", "line-report"), "report"),
    ("line-bot", "POST", "/api/v3/order", _order("0.01", "line-sol", "ETHUSDT"), "symbols"),
])
def test_decision_line_names_the_rule_that_decided(
    stack: Stack, client: str, method: str, path: str, body: str, rule: str
) -> None:
    r = _call(stack, client, method, path, body)
    rid = r.headers["x-proxy-request-id"]
    (line,) = _lines(stack, rid)
    assert line["rule"] == rule and line["status"] == r.status_code, line
    records = _records(stack, rid)
    assert {rec["rule"] for rec in records} == {rule}, records  # the outcome repeats the decision


def test_decision_line_of_a_replay_and_of_a_lost_answer_found_by_lookup(stack: Stack) -> None:
    first = _call(stack, "line-bot", "POST", "/api/v3/order", _order("0.01", "line-replay"))
    again = _call(stack, "line-bot", "POST", "/api/v3/order", _order("0.01", "line-replay"))
    assert first.status_code == again.status_code == 200 and "x-proxy-idempotent-replay" in again.headers
    (line,) = _lines(stack, again.headers["x-proxy-request-id"])
    assert line["rule"] == "idempotency.replay"

    stack.faults["binance-main"].arm("POST", "/api/v3/order", when="after", hold_s=2.0)
    lost = _call(stack, "line-bot", "POST", "/api/v3/order", _order("0.01", "line-lost"))
    assert lost.status_code == 504 and lost.headers["x-proxy-error"] == "upstream_timeout"
    (lost_line,) = _lines(stack, lost.headers["x-proxy-request-id"])
    assert lost_line["rule"] == "grant" and lost_line["error"] == "upstream_timeout"
    outcome = [r for r in _records(stack, lost.headers["x-proxy-request-id"]) if r["phase"] == "outcome"]
    assert [(r["rule"], r["error"]) for r in outcome] == [("grant", "upstream_timeout")]

    before = _bot_requests(stack)
    retry = _call(stack, "line-bot", "POST", "/api/v3/order", _order("0.01", "line-lost"))
    assert retry.status_code == 200 and retry.headers.get("x-proxy-order-lookup") == "found"
    lines = _lines(stack, retry.headers["x-proxy-request-id"])
    lookups = [ln for ln in lines if "order_lookup_for" in ln]
    own = [ln for ln in lines if "order_lookup_for" not in ln]
    assert lookups and all(ln["order_lookup_for"] == "line-lost" for ln in lookups)
    assert [ln["rule"] for ln in own] == ["idempotency.lookup"]
    assert _bot_requests(stack) - before == 1  # the retry, not its lookup
