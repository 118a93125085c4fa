"""Audit write cost: CPU per record, and write latency/throughput with and without fsync,
and what signed checkpoints (issue 19) add per record.

    python bench/bench_audit.py [--records N] [--checkpoint-every N]

Runs in a temporary directory on the filesystem of $TMPDIR (put it on the disk the audit
directory will use: fsync cost is a property of the device).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.audit import chain, checkpoint, merkle, signed
from proxy.audit.checkpointer import CheckpointPolicy
from proxy.audit.record import check_record
from proxy.audit.verify import verify
from proxy.audit.writer import AuditWriter
from proxy.model.sensitive import Secret
from proxy.model.signers import Ed25519Key


def sample(i: int) -> dict[str, Any]:
    return {
        "ts": "2024-05-01T12:00:00.000000Z", "request_id": f"01HX{i:022d}", "phase": "decision",
        "client": "momentum-bot", "account": "binance-main", "exchange": "binance",
        "method": "POST", "path": "/api/v3/order", "category": "trade", "decision": "allow",
        "rule": "grant:binance-main", "client_order_id": f"cid-{i}", "key_version": 3,
        "policy_version": "sha256:3f2a9c", "nonce": 1714564800000 + i,
        "intent": {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.01",
                   "price": "50000", "notional": "500"},
    }


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def cpu_cost(n: int) -> None:
    tkey = chain.trail_key(chain.MacKey(secrets.token_bytes(32)), "bench")
    recs = [sample(i) for i in range(n)]
    prev = chain.GENESIS_PREV
    t0 = time.perf_counter()
    for i, rec in enumerate(recs):
        check_record(rec)
        rec["_seq"] = i
        _, prev = chain.seal_line(tkey, prev, rec)
    per = (time.perf_counter() - t0) / n * 1e6
    print(f"cpu per record (check + canonical + HMAC + line): {per:.1f} us")


def checkpoint_cost(n: int, every: int, signer: Ed25519Key) -> None:
    """The pure CPU a checkpointing writer adds: a leaf hash and tree append per line, and one
    root + Ed25519 signature + JSON line per checkpoint (local key; Transit adds a round trip)."""
    tkey = chain.trail_key(chain.MacKey(secrets.token_bytes(32)), "bench")
    lines = []
    prev = chain.GENESIS_PREV
    for i in range(n):
        rec = sample(i)
        rec["_seq"] = i
        line, prev = chain.seal_line(tkey, prev, rec)
        lines.append(line[:-1])
    tree = merkle.CompactTree()
    t0 = time.perf_counter()
    for line in lines:
        tree.append(merkle.leaf_hash(line))
    per_line = (time.perf_counter() - t0) / n * 1e6
    k = max(1, n // every)
    t0 = time.perf_counter()
    for i in range(k):
        checkpoint.sign(signer, trail="bench", writer="w", size=tree.size + i, root=tree.root(),
                        ts="2024-05-01T12:00:00.000000Z").line()
    per_cp = (time.perf_counter() - t0) / k * 1e6
    print(f"checkpoint cpu: {per_line:.2f} us per line (leaf + tree), {per_cp:.0f} us per "
          f"checkpoint (root + sign), {per_line + per_cp / every:.2f} us per record at one "
          f"checkpoint every {every}")


def sync_latency(directory: Path, key: Secret, n: int, *, durable: bool) -> None:
    w = AuditWriter(directory, key, f"sync-{durable}", durable=durable)
    w.start_sync()
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        w.write_sync(sample(i))
        lat.append((time.perf_counter() - t0) * 1e3)
    w.close_sync()
    print(f"write_sync   fsync={durable!s:5}  p50 {statistics.median(lat):.3f} ms  "
          f"p99 {pct(lat, 0.99):.3f} ms")


async def async_run(directory: Path, key: Secret, n: int, conc: int, *, durable: bool,
                    policy: CheckpointPolicy | None = None) -> None:
    w = AuditWriter(directory, key, f"async-{durable}-{conc}-{policy is not None}",
                    durable=durable, checkpoints=policy)
    await w.start()
    lat: list[float] = []

    async def worker(k: int) -> None:
        for i in range(k, n, conc):
            t0 = time.perf_counter()
            await w.write(sample(i))
            lat.append((time.perf_counter() - t0) * 1e3)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(conc)))
    elapsed = time.perf_counter() - t0
    await w.close()
    signing = f"checkpoint/{policy.every_records}" if policy else "no checkpoints"
    print(f"write  conc={conc:<3} fsync={durable!s:5} {signing:17} p50 {statistics.median(lat):.3f} ms  "
          f"p99 {pct(lat, 0.99):.3f} ms  {n / elapsed:,.0f} records/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    args = parser.parse_args()
    n, every = args.records, args.checkpoint_every
    key = Secret(secrets.token_hex(32))
    signer = Ed25519Key(ed25519.Ed25519PrivateKey.generate())
    cpu_cost(n)
    checkpoint_cost(n, every, signer)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "audit"
        (Path(tmp) / "witness").mkdir()
        policy = CheckpointPolicy(signer, every_records=every, witness_dir=Path(tmp) / "witness")
        for durable in (False, True):
            sync_latency(directory, key, min(n, 2000), durable=durable)
        for conc in (1, 16, 64):
            for durable in (False, True):
                for pol in (None, policy):
                    asyncio.run(async_run(directory, key, n, conc, durable=durable, policy=pol))
        t0 = time.perf_counter()
        report = verify(directory, key)
        elapsed = time.perf_counter() - t0
        print(f"verify (HMAC): {report.records:,} records in {elapsed:.2f} s "
              f"({report.records / elapsed:,.0f} records/s), ok={report.ok}")
        keys = {checkpoint.key_id(signer.public_key()): signer.public_key()}
        t0 = time.perf_counter()
        sreport = signed.verify_signed(directory, keys, witness_dir=policy.witness_dir)
        elapsed = time.perf_counter() - t0
        print(f"verify (public key): {sreport.lines:,} lines in {elapsed:.2f} s "
              f"({sreport.lines / elapsed:,.0f} lines/s), ok={sreport.ok}")


if __name__ == "__main__":
    main()
