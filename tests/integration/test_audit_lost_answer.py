"""A request that was sent but got no answer (timeout) is one allowed decision plus an outcome
that names the failure: never a second, contradictory decision record."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.stack import AccountSpec, start_stack

ACCOUNT = AccountSpec("binance-main", "binance", {"api_key": "lostAnswerKey0123", "api_secret": "l" * 64})
POLICY = 'version = 1\nclient = "bot"\n\n[[grants]]\naccount = "binance-main"\nallow = ["read", "trade"]\n'
ORDER = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=40000"


def test_a_timed_out_order_has_one_decision_and_an_outcome_naming_the_timeout(tmp_path: Path) -> None:
    with start_stack(tmp_path, [ACCOUNT], {"bot": POLICY}, start_proxy=False) as stack:
        text = stack.config_path.read_text()
        stack.config_path.write_text(text.replace("[server]\n", "[server]\nupstream_timeout_s = 1.0\n", 1))
        stack.start_proxy()
        stack.wait_ready()
        stack.faults["binance-main"].arm("POST", "/api/v3/order", when="after")
        r = httpx.post(
            stack.proxy_url + "/x/binance-main/api/v3/order", content=ORDER, timeout=20,
            headers={"Proxy-Authorization": f"Bearer {stack.token('bot')}",
                     "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 504 and r.headers["x-proxy-error"] == "upstream_timeout"
        rid = r.headers["x-proxy-request-id"]
        stack.stop_proxy()  # flush the outcome record
        mine = [rec for rec in stack.audit_records() if rec["request_id"] == rid]
        decisions = [rec for rec in mine if rec["phase"] == "decision"]
        outcomes = [rec for rec in mine if rec["phase"] == "outcome"]
        assert [d["decision"] for d in decisions] == ["allow"]
        assert len(outcomes) == 1
        assert outcomes[0]["decision"] == "allow" and outcomes[0]["error"] == "upstream_timeout"
        assert outcomes[0]["upstream_status"] is None
        verified = stack.cli("audit", "verify")
        assert verified.returncode == 0, verified.stderr
        assert f"lost answer (the order may exist; look it up): request {rid}" in verified.stdout + verified.stderr
