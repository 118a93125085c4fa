"""The policy engine in a real proxy process (2 workers): price bands from the emulator's
ticker, budgets across workers, the kill switch from the CLI within 1 s, report mode in the
audit, and hot reload under load with no request served by a half-loaded policy."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from proxy.audit.reader import iter_records
from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

POLICY = """
version = 1
client = "mm"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT"]
max_order_qty = "{qty}"
price_band = "2%"

[[grants.budgets]]
per = "client"
window = "1h"
max_orders = {orders}
"""
REPORT = """
version = 1
client = "rollout"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
mode = "report"
max_order_qty = "0.01"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [AccountSpec("binance-main", "binance", {"api_key": "binanceKey0123456789", "api_secret": "c" * 64})]
    with start_stack(tmp_path_factory.mktemp("policy-live"), accounts,
                     {"mm": POLICY.format(qty="0.5", orders=1000), "rollout": REPORT}, workers=2) as s:
        yield s


def order(stack: Stack, client: str, **over: str) -> httpx.Response:
    data = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.1",
            "price": "50000"}
    data.update(over)
    return httpx.post(stack.proxy_url + "/x/binance-main/api/v3/order", data=data, timeout=10,
                      headers={"Proxy-Authorization": f"Bearer {stack.token(client)}"})


def audit(stack: Stack, request_id: str) -> dict[str, object]:
    time.sleep(0.05)
    return next(r for r in iter_records(stack.dir / "audit")
                if r["request_id"] == request_id and r.get("phase") == "decision")


def test_live_price_band_uses_the_exchange_ticker(stack: Stack) -> None:
    assert order(stack, "mm", price="50900").status_code == 200
    r = order(stack, "mm", price="52000")
    assert r.status_code == 403 and proxy_error(r)["rule"] == "price_band"
    assert audit(stack, r.headers["x-proxy-request-id"])["rule"] == "price_band"


def test_live_report_mode_allows_and_audits_would_deny(stack: Stack) -> None:
    r = order(stack, "rollout", quantity="0.5")
    assert r.status_code == 200, r.text
    record = audit(stack, r.headers["x-proxy-request-id"])
    assert record["decision"] == "allow" and record["would_deny"] == "max_order_qty"


def test_live_kill_switch_within_a_second_leaves_cancel(stack: Stack) -> None:
    assert order(stack, "mm").status_code == 200
    assert stack.cli("kill", "--client", "mm").returncode == 0
    set_at = time.monotonic()
    time.sleep(1.0)
    for _ in range(6):  # both workers
        r = order(stack, "mm")
        assert r.status_code == 503 and proxy_error(r)["rule"] == "kill_switch.client", r.text
    assert time.monotonic() - set_at < 5
    cancel = httpx.delete(stack.proxy_url + "/x/binance-main/api/v3/openOrders", params={"symbol": "BTCUSDT"},
                          headers={"Proxy-Authorization": f"Bearer {stack.token('mm')}"}, timeout=10)
    assert cancel.headers.get("x-proxy-error") is None, cancel.text
    assert stack.cli("kill", "--client", "mm", "--off").returncode == 0
    time.sleep(1.0)
    assert order(stack, "mm").status_code == 200


def test_live_reload_under_load_is_atomic(stack: Stack) -> None:
    """Flip the cap between 0.5 and 0.05 while two threads place 0.1 orders: every answer
    matches the policy version its audit record names; a broken file refuses its client."""
    path = stack.dir / "policies" / "mm.toml"
    stop = threading.Event()
    ids: list[tuple[str, int]] = []

    def load() -> None:
        while not stop.is_set():
            r = order(stack, "mm")
            ids.append((r.headers["x-proxy-request-id"], r.status_code))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(4):
            path.write_text(POLICY.format(qty="0.05" if i % 2 == 0 else "0.5", orders=1000))
            os.kill(stack.procs[0].pid, signal.SIGHUP)
            time.sleep(0.6)
    finally:
        stop.set()
        for t in threads:
            t.join()
    time.sleep(0.2)
    records = {r["request_id"]: r for r in iter_records(stack.dir / "audit") if r.get("phase") == "decision"}
    by_version: dict[str, set[str]] = {}
    for rid, status in ids:
        record = records[rid]
        assert (status == 200) == (record["decision"] == "allow"), record
        by_version.setdefault(str(record["policy_version"]), set()).add(str(record["decision"]))
    assert len(by_version) >= 2 and all(len(d) == 1 for d in by_version.values()), by_version
    path.write_text(POLICY.format(qty="0.5", orders=1000) + "\nunknown = 1\n")
    time.sleep(1.5)
    ready = httpx.get(stack.admin_url + "/readyz", timeout=5).json()
    assert ready["ready"] is True and "mm.toml" in (ready["policy_reload_error"] or "")
    refused = order(stack, "mm")  # never the old set: the client is refused until the file loads
    assert refused.status_code == 503 and proxy_error(refused)["rule"] == "policy_invalid", refused.text
    path.write_text(POLICY.format(qty="0.5", orders=1000))
    time.sleep(1.5)


def test_live_budget_holds_across_workers(stack: Stack) -> None:
    path = stack.dir / "policies" / "mm.toml"
    path.write_text(POLICY.format(qty="0.5", orders=1).replace('window = "1h"', 'window = "2h"'))
    time.sleep(1.5)
    statuses = [order(stack, "mm").status_code for _ in range(4)]
    assert statuses.count(200) == 1 and statuses.count(429) == 3, statuses
    r = order(stack, "mm")
    assert proxy_error(r)["rule"] == "budget.client.orders.2h" and "retry-after" in r.headers
    path.write_text(POLICY.format(qty="0.5", orders=1000))


def test_live_idempotent_replay_and_conflict_spend_no_budget(stack: Stack) -> None:
    """Budget of 2 orders: one order replayed three times and a conflicting reuse of its id
    leave room for exactly one more order; the third distinct order is over budget, is not
    sent, and (its id released) is refused again rather than replayed."""
    path = stack.dir / "policies" / "mm.toml"
    path.write_text(POLICY.format(qty="0.5", orders=2).replace('window = "1h"', 'window = "3h"'))
    time.sleep(1.5)
    tag = str(int(time.time()))

    def sent(coid: str) -> int:
        return sum(1 for r in stack.emulator("binance-main").recorder.all()
                   if r.path == "/api/v3/order" and f"newClientOrderId={coid}" in r.body.decode())

    try:
        first = order(stack, "mm", newClientOrderId=f"rp1-{tag}")
        assert first.status_code == 200, first.text
        for _ in range(3):
            again = order(stack, "mm", newClientOrderId=f"rp1-{tag}")
            assert again.status_code == 200 and again.headers["x-proxy-idempotent-replay"] == "true"
            assert again.json() == first.json()
        conflict = order(stack, "mm", newClientOrderId=f"rp1-{tag}", quantity="0.2")
        assert conflict.status_code == 409, conflict.text
        assert sent(f"rp1-{tag}") == 1
        second = order(stack, "mm", newClientOrderId=f"rp2-{tag}")
        assert second.status_code == 200, second.text  # replays and the conflict spent nothing
        for _ in range(2):
            third = order(stack, "mm", newClientOrderId=f"rp3-{tag}")
            assert third.status_code == 429 and proxy_error(third)["rule"] == "budget.client.orders.3h"
            assert "x-proxy-idempotent-replay" not in third.headers
        assert sent(f"rp2-{tag}") == 1 and sent(f"rp3-{tag}") == 0
    finally:
        path.write_text(POLICY.format(qty="0.5", orders=1000))
        time.sleep(1.5)
