"""A power cut after an order was sent: the sqlite group commit does not fsync its COMMIT (the
audit trail's fdatasync is the batch's durability point), so the claim can be lost while the
decision record is not. ``serve`` replays the trail's tail at start-up (proxy.state.journal):
the retry with the same client order id asks the exchange instead of placing the order twice.

Real proxy processes, real OpenBao, the Binance emulator. The power cut is every proxy process
killed at once and the state files put back as the disk held them before the order's batch
(what a lost page cache leaves of commits that were never fsynced); the audit files stay, as
their appends were fdatasynced.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from urllib.parse import parse_qsl

import httpx

from tests.support.stack import AccountSpec, Stack, start_stack

BINANCE = AccountSpec("binance-main", "binance", {"api_key": "journalKey0123456789", "api_secret": "j" * 64})
KRAKEN = AccountSpec("kraken-main", "kraken", {"api_key": "kraken-journal-key-01",
                                               "api_secret": base64.b64encode(b"journal-secret" * 5).decode()})
POLICY = 'version = 1\nclient = "bot"\n\n[[grants]]\naccount = "binance-main"\nallow = ["read", "trade"]\n'
KRAKEN_POLICY = 'version = 1\nclient = "bot"\n\n[[grants]]\naccount = "kraken-main"\nallow = ["read", "trade"]\n'
KRAKEN_PATH = "/x/kraken-main/0/private/AddOrder"
PATH = "/x/binance-main/api/v3/order"


def _body(coid: str) -> bytes:
    return ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=1000"
            f"&newClientOrderId={coid}").encode()


def _answered(db: Path, coid: str) -> bool:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT state FROM idempotency WHERE scope LIKE ?", (f"%:{coid}",)).fetchall()
    return rows == [("done",)]


def test_a_power_cut_loses_the_claim_and_the_retry_looks_the_order_up(tmp_path: Path) -> None:
    with start_stack(tmp_path, [BINANCE], {"bot": POLICY}) as stack:
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Proxy-Authorization": f"Bearer {stack.token('bot')}"}
        db = tmp_path / "state.db"
        with httpx.Client(base_url=stack.proxy_url, headers=headers, timeout=20) as client:
            assert client.post(PATH, content=_body("warmup")).status_code == 200
            deadline = time.monotonic() + 10
            while not _answered(db, "warmup"):  # its queued completion is committed: quiet
                assert time.monotonic() < deadline
                time.sleep(0.02)
            saved = tmp_path / "saved"
            saved.mkdir()
            files = [db, db.with_name(db.name + "-wal")]
            for f in files:
                shutil.copy(f, saved / f.name)

            first = client.post(PATH, content=_body("pc1"))
            assert first.status_code == 200

            _cut_power(stack, saved, files)
            assert not _answered(db, "pc1")

            stack.start_proxy()
            stack.wait_ready()
            retry = client.post(PATH, content=_body("pc1"))

        assert retry.status_code == 200, retry.text
        assert retry.headers.get("x-proxy-order-lookup") == "found"
        assert retry.json()["orderId"] == first.json()["orderId"]
        seen = stack.emulator("binance-main").recorder.all()
        placed = [r for r in seen if r.method == "POST" and r.path == "/api/v3/order"
                  and b"newClientOrderId=pc1" in r.body]
        looked_up = [r for r in seen if r.method == "GET" and r.path == "/api/v3/order"]
        assert len(placed) == 1, "placed once, not again after the power cut"
        assert looked_up, "the retry asked the exchange by client order id"
        assert "restored 1 idempotency claim" in stack.proxy_log()


def _kraken_body(coid: str) -> bytes:
    return f"pair=XBTUSD&type=buy&ordertype=limit&volume=0.001&price=1000&cl_ord_id={coid}".encode()


def _cut_power(stack: Stack, saved: Path, files: list[Path]) -> None:
    os.killpg(stack.procs[0].pid, signal.SIGKILL)  # everything at once
    stack.procs[0].wait()
    stack.procs.clear()
    for f in files:
        shutil.copy(saved / f.name, f)
    files[0].with_name(files[0].name + "-shm").unlink(missing_ok=True)


def _last_nonces(db: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [int(r[0]) for r in conn.execute("SELECT last FROM nonces")]


def test_a_power_cut_loses_a_kraken_nonce_and_serve_raises_the_floor_again(tmp_path: Path) -> None:
    """A Kraken order's batch commits without fsync too (its key's first batch made the key's
    fingerprint row durable): after the power cut the store's nonce is below the one the
    exchange saw, and ``serve``'s replay raises it above before any worker signs again."""
    with start_stack(tmp_path, [KRAKEN], {"bot": KRAKEN_POLICY}) as stack:
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Proxy-Authorization": f"Bearer {stack.token('bot')}"}
        db = tmp_path / "state.db"
        with httpx.Client(base_url=stack.proxy_url, headers=headers, timeout=20) as client:
            assert client.post(KRAKEN_PATH, content=_kraken_body("warmup")).status_code == 200
            deadline = time.monotonic() + 10
            while not _answered(db, "warmup"):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            saved = tmp_path / "saved"
            saved.mkdir()
            files = [db, db.with_name(db.name + "-wal")]
            for f in files:
                shutil.copy(f, saved / f.name)

            assert client.post(KRAKEN_PATH, content=_kraken_body("pc1")).status_code == 200
            seen = stack.emulator("kraken-main").recorder.all()
            sent = max(int(dict(parse_qsl(r.body.decode()))["nonce"]) for r in seen
                       if r.path.startswith("/0/private/"))

            _cut_power(stack, saved, files)
            (lost,) = _last_nonces(db)
            assert lost < sent, "the power cut took the store's last nonce"

            stack.start_proxy()
            stack.wait_ready()
            (floor,) = _last_nonces(db)
            assert floor >= sent, "serve raised the key's floor before any worker signed"
            assert client.post(KRAKEN_PATH, content=_kraken_body("pc2")).status_code == 200

        signed = stack.emulator("kraken-main").recorder.all()
        assert all(r.accepted for r in signed), [r.error for r in signed if not r.accepted]
        nonces = [int(dict(parse_qsl(r.body.decode()))["nonce"]) for r in signed
                  if r.path.startswith("/0/private/")]
        assert nonces == sorted(set(nonces)), "strictly increasing across the power cut"
        assert "raised the nonce floor of 1 key" in stack.proxy_log()
