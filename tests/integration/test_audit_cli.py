"""The audit review commands as operators run them: real OpenBao for the chain key, a trail
written by the real AuditWriter, and ``python -m proxy audit ...`` in subprocesses."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.audit.writer import AuditWriter
from proxy.model.sensitive import Secret
from tests.audit.conftest import decision, lines, outcome, put_lines, write_trail
from tests.support.stack import REPO, AccountSpec, Stack, _env, start_stack

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
DAY = 86400


def _ts(i: int) -> str:
    return (T0 + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    account = AccountSpec("binance-main", "binance", {"api_key": "k" * 20, "api_secret": "s" * 64})
    with start_stack(tmp_path_factory.mktemp("auditcli"), [account], {}, start_proxy=False) as s:
        yield s


@pytest.fixture(scope="module")
def key(stack: Stack) -> Secret:
    data = stack.vault.client().secrets.kv.v2.read_secret_version(
        path="proxy/audit-chain", mount_point="secret", raise_on_deleted_version=True)["data"]["data"]
    return Secret(data["key"])


@pytest.fixture(scope="module")
def trail(stack: Stack, key: Secret) -> Path:
    """audit.dir: two writers; req-3 is ETHUSDT; even requests have outcomes."""
    d = stack.dir / "audit"

    def make_a(i: int) -> dict[str, object]:
        if i % 2:
            return outcome(i - 1, ts=_ts(2 * i))
        sym = {"symbol": "ETHUSDT", "side": "SELL", "quantity": "1", "price": "3000"} if i == 6 else {}
        intent = {**decision(i)["intent"], **sym}
        return decision(i, ts=_ts(2 * i), intent=intent)

    write_trail(d, key, "wa", records=8, make=make_a)
    write_trail(d, key, "wb", records=4, make=lambda i: decision(
        100 + i, ts=_ts(2 * i + 1), decision="deny", rule="symbols", client="bot-c"))
    return d


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_audit_query_symbol_request_id_and_table(stack: Stack, trail: Path) -> None:
    out = stack.cli("audit", "query", "--symbol", "ETHUSDT")
    assert out.returncode == 0, out.stderr
    got = [(r["request_id"], r["phase"]) for r in _json_lines(out.stdout)]
    assert got == [("req-6", "decision"), ("req-6", "outcome")]
    out = stack.cli("audit", "query", "--request-id", "req-102")
    assert [r["client"] for r in _json_lines(out.stdout)] == ["bot-c"]
    out = stack.cli("audit", "query", "--decision", "deny", "--format", "table")
    rows = out.stdout.splitlines()
    assert rows[0].split()[:3] == ["ts", "request_id", "phase"]
    assert [row.split()[1] for row in rows[1:]] == ["req-100", "req-101", "req-102", "req-103"]
    assert all("symbols" in row for row in rows[1:])


def test_audit_tail_prints_the_last_records(stack: Stack, trail: Path) -> None:
    out = stack.cli("audit", "tail", "-n", "3")
    assert out.returncode == 0, out.stderr
    got = [(r["request_id"], r["phase"]) for r in _json_lines(out.stdout)]
    assert got == [("req-4", "outcome"), ("req-6", "decision"), ("req-6", "outcome")]
    out = stack.cli("audit", "tail", "-n", "2", "--client", "bot-b", "--format", "table")
    assert [row.split()[1:3] for row in out.stdout.splitlines()[1:]] == [
        ["req-6", "decision"], ["req-6", "outcome"]]
    assert stack.cli("audit", "tail", "-f", "--format", "table").returncode == 2
    assert stack.cli("audit", "tail", str(stack.dir / "nowhere")).returncode == 2


def test_audit_tail_follow_sees_new_records_from_every_writer(
    stack: Stack, key: Secret, tmp_path: Path
) -> None:
    d = tmp_path / "live"
    write_trail(d, key, "old", records=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "audit", "tail", "-f", "-n", "1", "--config",
         str(stack.config_path), str(d), "--account", "binance-main"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=_env(stack), text=True,
    )
    lines_q: queue.Queue[str] = queue.Queue()
    def pump() -> None:
        for x in proc.stdout or []:
            lines_q.put(x)

    threading.Thread(target=pump, daemon=True).start()

    def next_id() -> str:
        return str(json.loads(lines_q.get(timeout=30))["request_id"])

    try:
        assert next_id() == "req-1"  # the last record already there
        writers = [AuditWriter(d, key, name) for name in ("w1", "w2")]
        for w in writers:
            w.start_sync()
        writers[0].write_sync(decision(10))
        writers[1].write_sync(decision(11, account="other-account"))  # filtered out
        writers[1].write_sync(decision(12))
        writers[0].write_sync(outcome(10, account="ignored"))  # joined to its decision
        got = sorted(next_id() for _ in range(3))
        assert got == ["req-10", "req-10", "req-12"]
        for w in writers:
            w.close_sync()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert lines_q.empty()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_audit_export_csv_to_stdout_and_file(stack: Stack, trail: Path, tmp_path: Path) -> None:
    out = stack.cli("audit", "export", "--csv", "--client", "bot-b")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["request_id"], r["phase"]) for r in rows] == [
        (f"req-{i}", p) for i in (0, 2, 4, 6) for p in ("decision", "outcome")]
    eth = next(r for r in rows if r["intent.symbol"] == "ETHUSDT")
    assert (eth["intent.side"], eth["intent.quantity"], eth["intent.price"]) == ("SELL", "1", "3000")
    assert rows[1]["upstream_status"] == "200" and rows[1]["exchange_order_id"] == "1000"
    target = tmp_path / "export.csv"
    out = stack.cli("audit", "export", "--csv", "--verify", "--output", str(target))
    assert out.returncode == 0, out.stderr
    assert "12 records from a verified trail" in out.stderr and out.stdout == ""
    assert len(list(csv.DictReader(target.open()))) == 12
    assert target.stat().st_mode & 0o077 == 0
    assert stack.cli("audit", "export").returncode == 2  # --csv is required


def test_audit_export_verify_refuses_a_tampered_trail(
    stack: Stack, key: Secret, tmp_path: Path
) -> None:
    d = tmp_path / "bad"
    write_trail(d, key, records=5)
    seg = d / "w1.000000.jsonl"
    content = lines(seg)
    del content[2]
    put_lines(seg, content)
    out = stack.cli("audit", "export", "--csv", "--verify", str(d))
    assert out.returncode == 1 and "w1.000000.jsonl:3" in out.stderr and out.stdout == ""


def _age(d: Path, days: int) -> None:
    old = time.time() - days * DAY
    for p in d.glob("*.jsonl"):
        if p.name != "PRUNED.jsonl":
            os.utime(p, (old, old))


def test_audit_prune_keeps_what_remains_verifiable(
    stack: Stack, key: Secret, tmp_path: Path
) -> None:
    d = tmp_path / "retained"
    write_trail(d, key, "gone", records=30, max_segment_bytes=2000)  # closed, all old
    write_trail(d, key, "live", records=30, max_segment_bytes=2000, close=False)
    _age(d, 100)
    fresh = d / "live.000000.jsonl"  # a recent segment of the live chain stays, and all after it
    os.utime(fresh, None)
    before = {p.name for p in d.glob("*.jsonl")}
    dry = stack.cli("audit", "prune", "--older-than", "90d", "--dry-run", str(d))
    assert dry.returncode == 0, dry.stderr
    assert {p.name for p in d.glob("*.jsonl")} == before
    out = stack.cli("audit", "prune", "--older-than", "90d", str(d))
    assert out.returncode == 0, out.stderr
    removed = set(out.stdout.split())
    assert removed == set(dry.stdout.split())
    assert removed == {n for n in before if n.startswith("gone.")}  # live's first is recent
    verify = stack.cli("audit", "verify", str(d))
    assert verify.returncode == 0, verify.stdout
    again = stack.cli("audit", "prune", "--older-than", "90d", str(d))
    assert again.returncode == 0 and again.stdout == ""
    # now age the live chain: its sealed segments go, the open one stays
    _age(d, 100)
    out = stack.cli("audit", "prune", "--older-than", "90d", str(d))
    assert out.returncode == 0 and out.stdout.split()
    assert all(n.startswith("live.") for n in out.stdout.split())
    left = sorted(p.name for p in d.glob("live.*.jsonl"))
    assert len(left) == 1
    verify = stack.cli("audit", "verify", str(d))
    assert verify.returncode == 0, verify.stdout
    assert stack.cli("audit", "prune", "--older-than", "soon", str(d)).returncode == 2


def test_audit_prune_refuses_a_tampered_trail(stack: Stack, key: Secret, tmp_path: Path) -> None:
    d = tmp_path / "tampered"
    write_trail(d, key, records=30, max_segment_bytes=2000)
    _age(d, 100)
    seg = d / "w1.000001.jsonl"
    content = lines(seg)
    content[2] = content[2].replace(b"bot-", b"bot_")
    put_lines(seg, content)
    before = {p.name for p in d.iterdir()}
    out = stack.cli("audit", "prune", "--older-than", "1d", str(d))
    assert out.returncode == 1 and "w1.000001.jsonl:3" in out.stderr
    assert {p.name for p in d.iterdir()} == before
