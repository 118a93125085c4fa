"""/readyz for the whole proxy (proxy/ops/readiness.py): ready only when every live worker
is, with fresh status; one worker keeps the body it always had."""

from __future__ import annotations

from proxy.ops.readiness import WorkerReadiness, merge

DETAILS: dict[str, object] = {"policy_version": "abc", "policy_reload_error": None, "exchange_clock": {}}


def test_single_worker_body_is_unchanged() -> None:
    assert merge(WorkerReadiness("7", (), DETAILS), [], 5) == (True, {"ready": True, **DETAILS})
    ready, body = merge(WorkerReadiness("7", ("vault: down",), DETAILS), [], 5)
    assert not ready and body == {"ready": False, "reasons": ["vault: down"], **DETAILS}
    assert "workers" not in body


def test_all_ready_workers_make_the_proxy_ready() -> None:
    ready, body = merge(WorkerReadiness("12", (), DETAILS),
                        [WorkerReadiness("11", (), DETAILS, 0.5), WorkerReadiness("13", (), {}, 2.0)], 5)
    assert ready and "reasons" not in body
    assert body["workers"] == [{"pid": "11", "ready": True, "reasons": [], "policy_version": "abc"},
                               {"pid": "12", "ready": True, "reasons": [], "policy_version": "abc"},
                               {"pid": "13", "ready": True, "reasons": []}]
    assert body["policy_version"] == "abc"


def test_one_unready_worker_makes_the_proxy_unready_and_is_named() -> None:
    ready, body = merge(WorkerReadiness("12", (), DETAILS),
                        [WorkerReadiness("11", ("starting",), {}, 0.1)], 5)
    assert not ready
    assert body["reasons"] == ["worker 11: starting"]
    assert {"pid": "11", "ready": False, "reasons": ["starting"]} in body["workers"]  # type: ignore[operator]


def test_stale_or_missing_status_is_not_ready() -> None:
    ready, body = merge(WorkerReadiness("12", ()),
                        [WorkerReadiness("11", (), {"vault": {"up": False}}, 9.0),
                         WorkerReadiness("13", age_s=None)], 5)
    assert not ready
    assert body["reasons"] == ["worker 11: no status for 9 s (stuck or overloaded)",
                               "worker 13: starting (no status reported yet)"]
    assert "vault" not in body  # a stale worker's details are not trusted


def test_details_only_another_worker_reports_are_shown() -> None:
    own = WorkerReadiness("12", (), {"policy_version": "new"})
    other = WorkerReadiness("11", (), {"policy_version": "old", "vault": {"up": False}}, 1.0)
    _, body = merge(own, [other], 5)
    assert body["policy_version"] == "new"          # the answering worker's own
    assert body["vault"] == {"up": False}           # only the other knows it


def test_details_cannot_overwrite_the_verdict() -> None:
    ready, body = merge(WorkerReadiness("12", ("x",), {"ready": True, "reasons": []}),
                        [WorkerReadiness("11", (), {}, 1.0)], 5)
    assert not ready and body["ready"] is False and body["reasons"] == ["worker 12: x"]


def test_accounts_detail_says_who_can_sign_and_why_not() -> None:
    from proxy.ops.readiness import AccountSigning, accounts_detail

    now = 1_800_000_000.0
    shown = accounts_detail([
        AccountSigning("a", 3, None, "key version 3 checked with binance: cannot withdraw"),
        AccountSigning("b", 1, "account b: could not check ... (HTTP 401: -2015 Invalid API-key)", "x"),
        AccountSigning("c", 2, None, "ok", paused_until=now + 30),
        AccountSigning("d", None, "secret not loaded: no secret at secret/exchanges/d", "not checked yet"),
    ], now)
    assert shown["a"] == {"can_sign": True, "key_version": 3,
                          "exchange_verdict": "key version 3 checked with binance: cannot withdraw"}
    assert shown["b"]["can_sign"] is False and "-2015" in str(shown["b"]["why"])
    assert shown["c"]["can_sign"] is False and shown["c"]["paused_until"] == "2027-01-15T08:00:30Z"
    assert str(shown["c"]["why"]).startswith("paused until 2027-01-15T08:00:30Z")
    assert shown["d"]["can_sign"] is False and shown["d"]["key_version"] is None
