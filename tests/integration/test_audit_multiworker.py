"""One trail from several processes: ``serve --workers 3`` under concurrent allowed and denied
orders, then ``audit verify`` and ``audit query`` through the CLI, live and after shutdown."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.stack import AccountSpec, Stack, start_stack

POLICY = """
version = 1
client = "grid-bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT"]
max_order_qty = "0.5"
"""
ALLOWED, DENIED, READS = 48, 24, 12


def _send(stack: Stack, token: str, i: int) -> tuple[str, str, int]:
    """Every third order is refused by policy (symbol); reads are allowed too."""
    headers = {"Proxy-Authorization": f"Bearer {token}"}
    if i < READS:
        r = httpx.get(stack.proxy_url + "/x/binance-main/api/v3/account", headers=headers, timeout=60)
        return r.headers["x-proxy-request-id"], "allow", r.status_code
    deny = i % 3 == 0
    body = {"symbol": "ETHUSDT" if deny else "BTCUSDT", "side": "BUY", "type": "LIMIT",
            "timeInForce": "GTC", "quantity": "0.01", "price": "2000", "newClientOrderId": f"mw-{i}"}
    r = httpx.post(stack.proxy_url + "/x/binance-main/api/v3/order", data=body, headers=headers,
                   timeout=60)
    return r.headers["x-proxy-request-id"], "deny" if deny else "allow", r.status_code


def _check_trail(stack: Stack, sent: list[tuple[str, str, int]]) -> list[dict[str, object]]:
    verify = stack.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("OK:"), verify.stdout
    out = stack.cli("audit", "query")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    decisions = Counter(r["request_id"] for r in records if r["phase"] == "decision")
    outcomes = Counter(r["request_id"] for r in records if r["phase"] == "outcome")
    for rid, want, _ in sent:
        assert decisions[rid] == 1, rid
        assert outcomes[rid] == (1 if want == "allow" else 0), rid
    assert set(decisions) == {rid for rid, _, _ in sent}
    by_id = {r["request_id"]: r for r in records if r["phase"] == "decision"}
    assert all(by_id[rid]["decision"] == want for rid, want, _ in sent)
    for rid, want, _ in sent:  # the filters agree with the whole
        if want == "deny":
            assert by_id[rid]["rule"] == "symbols"
    denied = stack.cli("audit", "query", "--decision", "deny")
    assert len(denied.stdout.splitlines()) == sum(1 for _, w, _ in sent if w == "deny")
    return records


def test_audit_trail_from_three_workers_verifies_and_answers_queries(tmp_path: Path) -> None:
    account = AccountSpec("binance-main", "binance", {"api_key": "k" * 20, "api_secret": "s" * 64})
    with start_stack(tmp_path, [account], {"grid-bot": POLICY}, workers=3) as stack:
        token = stack.token("grid-bot")
        total = READS + ALLOWED + DENIED
        with ThreadPoolExecutor(max_workers=16) as pool:
            sent = list(pool.map(lambda i: _send(stack, token, i), range(total)))
        assert all(status == (200 if want == "allow" else 403) for _, want, status in sent), sent
        assert len({rid for rid, _, _ in sent}) == total
        assert sum(w == "deny" for _, w, _ in sent) == DENIED
        records = _check_trail(stack, sent)  # live: three open chains
        writers = Counter(r["_writer"] for r in records)
        chains = list((stack.dir / "audit").glob("*.000000.jsonl"))
        assert len(chains) >= 3, chains  # one chain per worker process
        assert len(writers) >= 2, writers  # the load really was spread over processes
        print(f"\nrecords per writer: {sorted(writers.values())}")
        stack.stop_proxy()
        _check_trail(stack, sent)  # after shutdown: every chain sealed final
        verify = stack.cli("audit", "verify")
        assert "open chain" not in verify.stdout and "intent without outcome" not in verify.stdout
