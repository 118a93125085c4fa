"""Issue 14, case 2: requests without a token cannot fill the audit disk (a real ``serve``).

* Refusals without a valid token are rate limited per source address (429 beyond) and
  written as one aggregate record per source and interval, with the count, instead of one
  fsynced record each.
* Below the audit reserve, reads and aggregates are given up and orders keep being served;
  /readyz and /metrics show the headroom. The reserve is set above the disk's free space, so
  the low level is reached without filling a disk.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

BINANCE = {"api_key": "binanceKey0123456789", "api_secret": "b" * 64}
POLICY = """
version = 1
client = "bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
"""
FLOOD_SOURCE = "127.0.0.5"
ORDER = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=50000"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("flood"), [AccountSpec("binance-main", "binance", BINANCE)],
                     {"bot": POLICY}) as s:
        yield s


def _flood(stack: Stack, n: int) -> list[int]:
    url = urlsplit(stack.proxy_url)
    assert url.hostname is not None and url.port is not None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30, source_address=(FLOOD_SOURCE, 0))
    statuses = []
    try:
        for i in range(n):
            headers = {"Proxy-Authorization": "Bearer not-a-token"} if i % 2 else {}
            conn.request("GET", "/x/binance-main/api/v3/account", headers=headers)
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
    finally:
        conn.close()
    return statuses


def test_unauthenticated_refusals_are_rate_limited_and_audited_in_aggregate(stack: Stack) -> None:
    statuses = _flood(stack, 300)
    assert set(statuses) == {401, 429}  # a burst of 401s, then the source's rate: 429
    stack.stop_proxy()  # the last interval's aggregate is written at the graceful stop
    records = [r for r in stack.audit_records() if r.get("rule") == "unauthenticated"]
    assert records, "no aggregate record"
    assert all(r["phase"] == "aggregate" and r["source"] == FLOOD_SOURCE for r in records)
    assert sum(r["count"] for r in records) == 300
    assert sum(r["rate_limited"] for r in records) == statuses.count(429)
    assert len(records) <= 2  # one per source per interval (the run may straddle two)
    lines = [json.loads(line) for line in stack.proxy_log().splitlines() if line.startswith("{")]
    assert sum(1 for line in lines if line.get("rule") == "unauthenticated") == len(records)  # one each


def test_below_the_audit_reserve_reads_stop_and_orders_flow(stack: Stack) -> None:
    stack.stop_proxy()
    stack.edit_config('dir = "audit"', 'dir = "audit"\nreserve_bytes = 4611686018427387904')  # 2**62
    stack.start_proxy()
    stack.wait_ready()
    status, ready = stack.readyz()
    assert status == 200  # orders are still served: ready
    audit = ready["audit"] if "audit" in ready else ready["workers"][0]["audit"]
    assert audit["free_bytes"] > 0 and audit["reserve_bytes"] == 2**62
    assert audit["state"].startswith("below_reserve")
    assert stack.metric("proxy_audit_free_bytes")[0][1] > 0
    headers = {"Proxy-Authorization": f"Bearer {stack.token('bot')}"}
    read = httpx.get(stack.proxy_url + "/x/binance-main/api/v3/account", headers=headers, timeout=30)
    assert (read.status_code, read.headers["x-proxy-error"]) == (503, "not_ready")
    assert "reserve" in proxy_error(read)["message"]
    order = httpx.post(stack.proxy_url + "/x/binance-main/api/v3/order", content=ORDER, timeout=30,
                       headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert order.status_code == 200, order.text
    decisions = [r for r in stack.audit_records() if r.get("category") == "trade" and r.get("decision") == "allow"]
    assert decisions, "the order's decision record was not written"
