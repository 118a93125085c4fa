"""Policy edits always take effect (issue 12, cases 1 and 2), through ``serve --workers 2``:
a worker respawned after ``kill -9`` enforces the files as they are, never the start-up set;
an edit that only takes permissions away is never refused (its leftovers are warnings that
``policy check`` prints); a file that does not load refuses its client outright, on every
worker, while the other clients keep trading."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from proxy.audit.reader import iter_records
from proxy.policy.loader import dir_digest
from tests.integration.test_idempotency_kill9 import _children
from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

MM = """
version = 1
client = "mm"

[[grants]]
account = "binance-main"
allow = [{allow}]
symbols = [{symbols}]
max_order_qty = "0.5"

[grants.per_symbol.ETHUSDT]
max_order_qty = "2"

[[grants.budgets]]
per = "client"
window = "1h"
max_orders = 1000
"""
TRADING = MM.format(allow='"read", "trade", "cancel"', symbols='"BTCUSDT", "ETHUSDT"')
OTHER = 'version = 1\nclient = "other"\n\n[[grants]]\naccount = "binance-main"\nallow = ["read", "trade", "cancel"]\n'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [AccountSpec("binance-main", "binance", {"api_key": "editsKey0123456789", "api_secret": "e" * 64})]
    with start_stack(tmp_path_factory.mktemp("policy-edits"), accounts, {"mm": TRADING, "other": OTHER},
                     workers=2) as s:
        yield s


@pytest.fixture(autouse=True)
def trading_again(stack: Stack) -> Iterator[None]:
    yield
    edit(stack, TRADING)


def order(stack: Stack, client: str = "mm", symbol: str = "BTCUSDT") -> httpx.Response:
    data = {"symbol": symbol, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.1",
            "price": "50000" if symbol == "BTCUSDT" else "3000"}
    return httpx.post(stack.proxy_url + "/x/binance-main/api/v3/order", data=data, timeout=10,
                      headers={"Proxy-Authorization": f"Bearer {stack.token(client)}"})


def placed(stack: Stack) -> int:
    return sum(1 for r in stack.emulator("binance-main").recorder.all()
               if r.method == "POST" and r.path == "/api/v3/order")


def until(what: str, check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
        except (httpx.HTTPError, KeyError, ValueError):
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def workers(stack: Stack) -> list[dict[str, Any]]:
    status, body = stack.readyz()
    return list(body["workers"]) if status == 200 else []


def edit(stack: Stack, text: str) -> str:
    """Write mm.toml and wait until both workers enforce the files; returns their version."""
    (stack.dir / "policies" / "mm.toml").write_text(text)
    version = dir_digest(stack.dir / "policies")
    until(f"both workers to enforce version {version}", lambda: (
        len(ws := workers(stack)) == 2 and all(w.get("policy_version") == version for w in ws)))
    return version


def decision_records(stack: Stack, request_ids: set[str]) -> list[dict[str, Any]]:
    time.sleep(0.1)
    return [r for r in iter_records(stack.dir / "audit")
            if r["request_id"] in request_ids and r.get("phase") == "decision"]


def test_policy_edits_a_respawned_worker_enforces_the_files_as_they_are_now(stack: Stack) -> None:
    """Narrow mm to read/cancel by hot reload, kill -9 a worker: after the supervisor starts a
    new one, no order is placed, and every refusal is audited with the narrowed version."""
    narrowed = edit(stack, MM.format(allow='"read", "cancel"', symbols='"BTCUSDT", "ETHUSDT"'))
    serve_pid = stack.procs[0].pid
    victim = sorted(_children(serve_pid))[0]
    os.kill(victim, signal.SIGKILL)
    until("a new worker that is ready", lambda: (
        len(ws := workers(stack)) == 2 and str(victim) not in {w["pid"] for w in ws}
        and all(w["ready"] for w in ws)))
    before = placed(stack)
    answers = [order(stack) for _ in range(12)]
    assert all(a.status_code == 403 and proxy_error(a)["rule"] == "allow" for a in answers), \
        [a.text for a in answers if a.status_code != 403]
    assert placed(stack) == before
    records = decision_records(stack, {a.headers["x-proxy-request-id"] for a in answers})
    assert len(records) == 12 and {r["policy_version"] for r in records} == {narrowed}
    until("two workers still serving", lambda: len({w["pid"] for w in workers(stack)}) == 2)


def test_policy_edits_taking_trade_away_is_never_refused(stack: Stack) -> None:
    """The caps, override and budget left on a grant without trade are warnings, not errors."""
    text = MM.format(allow='"read", "cancel"', symbols='"BTCUSDT", "ETHUSDT"')
    (stack.dir / "policies" / "mm.toml").write_text(text)
    check = stack.cli("policy", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "warning:" in check.stdout and "\"trade\" is not allowed" in check.stdout
    edit(stack, text)
    for _ in range(6):  # both workers
        r = order(stack)
        assert r.status_code == 403 and proxy_error(r)["rule"] == "allow", r.text
    status, body = stack.readyz()
    assert status == 200 and body["policy_reload_error"] is None


def test_policy_edits_removing_a_symbol_with_an_override_is_never_refused(stack: Stack) -> None:
    text = MM.format(allow='"read", "trade", "cancel"', symbols='"BTCUSDT"')
    (stack.dir / "policies" / "mm.toml").write_text(text)
    check = stack.cli("policy", "check")
    assert check.returncode == 0 and "per_symbol.ETHUSDT" in check.stdout, check.stdout + check.stderr
    edit(stack, text)
    before = placed(stack)
    for _ in range(4):
        r = order(stack, symbol="ETHUSDT")
        assert r.status_code == 403 and proxy_error(r)["rule"] == "symbols", r.text
    assert placed(stack) == before
    assert order(stack).status_code == 200


def test_policy_edits_a_file_that_does_not_load_refuses_its_client_outright(stack: Stack) -> None:
    """Loud, and never the older, wider policy: 503 policy_invalid for everything mm sends (a
    cancel too) on every worker, /readyz names the client and the file, the error counter
    moves; another client keeps trading."""
    edit(stack, TRADING + "max_order_qyt = \"1\"\n")
    assert stack.cli("policy", "check").returncode == 3
    before = placed(stack)
    answers = [order(stack) for _ in range(6)]
    cancel = httpx.delete(stack.proxy_url + "/x/binance-main/api/v3/openOrders", params={"symbol": "BTCUSDT"},
                          headers={"Proxy-Authorization": f"Bearer {stack.token('mm')}"}, timeout=10)
    for r in (*answers, cancel):
        assert r.status_code == 503 and proxy_error(r)["rule"] == "policy_invalid", r.text
    assert placed(stack) == before
    status, body = stack.readyz()
    assert status == 200 and body["clients_refused"] == ["mm"] and "mm.toml" in body["policy_reload_error"]
    assert sum(v for _, v in stack.metric("proxy_policy_reload_errors_total")) >= 1
    assert order(stack, client="other").status_code == 200
    records = decision_records(stack, {a.headers["x-proxy-request-id"] for a in answers})
    assert {r["rule"] for r in records} == {"policy_invalid"} and {r["decision"] for r in records} == {"deny"}

