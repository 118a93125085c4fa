"""The group commit (proxy.state.group_commit) against real stores and a real audit trail.

In process: what one batch does (claims, refusals over the weight budget, replays, queued
completions seen by the next claim). Across ``kill -9`` (tests.state.commit_child), at each
step a batch takes: whatever a worker was told is durable (the moment it would send) is a
claim in the store and a decision record in the trail; a claim whose record never became
durable was never reported, and a retry after its lease must look the order up first
(``previous_unknown``), never place it blindly. A nonce the batch allocated with a claim is in
that order's decision record, and no nonce handed out before the kill is handed out again.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.audit.review import iter_records
from proxy.audit.writer import AuditWriter
from proxy.guards.rate_limits import WindowLimiter, open_limiter
from proxy.model.sensitive import Secret
from proxy.state import IdempotencyScope, InFlight, Owner, Replay, StoredResponse
from proxy.state.base import wall_clock_us
from proxy.state.batches import group_commit
from proxy.state.group_commit import Spend
from tests.state.commit_child import nonce_key
from tests.state.conftest import REPO_ROOT, Target, kill_9, read_line
from tests.support.redis_server import RedisServer

LEASE_S = 30.0


def _scope(coid: str) -> IdempotencyScope:
    return IdempotencyScope("bot", "main", coid)


def _limiter(target: Target) -> WindowLimiter:
    if target.backend == "sqlite":
        return open_limiter("sqlite", path=Path(target.location), url=None)
    return open_limiter("redis", path=None, url=target.location)


def test_one_batch_claims_spends_and_records(target: Target, tmp_path: Path) -> None:
    key = Secret(secrets.token_hex(32))

    async def run() -> str:
        store, limiter = target.open(), _limiter(target)
        (tmp_path / "audit").mkdir()
        audit = AuditWriter(tmp_path / "audit", key, "w1")
        await audit.start()
        commit = group_commit(store, limiter, audit)
        assert commit is not None
        budget = f"weight|{target.prefix}"
        try:
            # 6 orders at once in a budget of 4: four owners recorded, two refused and not kept
            results = await asyncio.gather(*(
                commit.claim(_scope(f"c{i}"), "h", 60, lease_s=LEASE_S, spend=Spend(budget, 4, 60, 1),
                             record={"request_id": f"c{i}", "phase": "decision", "decision": "allow"})
                for i in range(6)))
            recorded = [r for r in results if r.recorded]
            refused = [r for r in results if r.refused is not None]
            assert len(recorded) == 4 and len(refused) == 2
            assert all(isinstance(r.result, Owner) for r in results)
            assert commit.batches <= 2  # all six arrived together: one batch (two if split)
            # a refused order kept no claim: a retry owns it again
            free = [f"c{i}" for i, r in enumerate(results) if r.refused is not None]
            again = await store.begin(_scope(free[0]), "h", lease_s=LEASE_S)
            assert isinstance(again, Owner) and not again.previous_unknown
            # a queued completion is seen by this worker's next claim of the id (queue order)
            first = next(i for i, r in enumerate(results) if r.recorded)
            token = results[first].result.token  # type: ignore[union-attr]
            commit.complete(_scope(f"c{first}"), StoredResponse(200, (), b"ok"), token=token, ttl_s=60)
            replay = await commit.claim(_scope(f"c{first}"), "h", 60, lease_s=LEASE_S)
            assert isinstance(replay.result, Replay) and replay.result.response.body == b"ok"
            other = await commit.claim(_scope(f"c{first}"), "other", 60, lease_s=LEASE_S)
            assert type(other.result).__name__ == "Conflict"
            commit.outcome({"request_id": f"c{first}", "phase": "outcome", "upstream_status": 200})
            await commit.drain()
            return f"c{first}"
        finally:
            await audit.close()
            await limiter.close()
            await store.close()

    completed = asyncio.run(run())
    records = list(iter_records(tmp_path / "audit", key))
    decisions = {r["request_id"] for r in records if r.get("phase") == "decision"}
    assert len(decisions) == 4 and completed in decisions
    assert [r["request_id"] for r in records if r.get("phase") == "outcome"] == [completed]


def _spawn(target: Target, audit_dir: Path, key: Secret, die_at: str) -> subprocess.Popen[str]:
    env = {**os.environ, "AUDIT_TEST_KEY": key.reveal(), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.state.commit_child", *target.argv(), str(audit_dir), str(LEASE_S),
         die_at], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("die_at", ["none", "after_commit", "after_audit"])
def test_kill_9_never_loses_what_was_reported_durable(target: Target, tmp_path: Path, die_at: str) -> None:
    key = Secret(secrets.token_hex(32))
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    proc = _spawn(target, audit_dir, key, die_at)
    assert read_line(proc) == "started"
    claiming: set[str] = set()
    durable: set[str] = set()
    signed: dict[str, int] = {}  # the nonce each order reported durable would be signed with
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline().strip() if die_at != "none" else read_line(proc)
        if not line:
            break  # it killed itself
        what, coid, *rest = line.split()
        (claiming if what == "claiming" else durable).add(coid)
        if what == "durable" and len(rest) == 2:
            signed[coid] = int(rest[1])
        if die_at == "none" and len(durable) >= 80:
            break
    if die_at == "none":
        kill_9(proc)
    else:
        assert proc.wait(timeout=10) == -9
        proc.stdout.close()
    assert durable, "some orders were made durable before the kill"

    records = [r for r in iter_records(audit_dir) if r.get("phase") == "decision"]
    decisions = {r["request_id"] for r in records}
    assert durable <= decisions, "every order reported durable has its decision record"
    assert signed and len(set(signed.values())) == len(signed), "no nonce handed out twice"
    assert {r["request_id"]: r["nonce"] for r in records if r["request_id"] in signed} == signed, \
        "each decision record names the nonce its order would be signed with"

    async def probe() -> dict[str, str]:
        store = target.open()
        later = wall_clock_us() + int((LEASE_S + 5) * 1_000_000)  # every lease has ended
        seen = {}
        try:  # the next nonce after the kill is above every nonce reported durable before it
            after_kill = await store.next_nonce(nonce_key(target.prefix), "us", now_us=0)
            assert after_kill > max(signed.values()), "nonces never repeat across kill -9"
            for coid in sorted(claiming):
                now = await store.begin(_scope(coid), "h", 3600, lease_s=LEASE_S)
                if coid in durable:  # the claim survived: in flight (lease) or answered
                    assert isinstance(now, InFlight | Replay), (coid, now)
                if isinstance(now, Owner):
                    seen[coid] = "never claimed"
                    await store.abandon(_scope(coid), token=now.token)
                    continue
                after = await store.begin(_scope(coid), "h", 3600, lease_s=LEASE_S, now_us=later)
                if isinstance(after, Replay):
                    seen[coid] = "answered"
                else:  # the lease ended without an answer: the retry must look the order up
                    assert isinstance(after, Owner) and after.previous_unknown, (coid, after)
                    seen[coid] = "unknown"
        finally:
            await store.close()
        return seen

    seen = asyncio.run(probe())
    assert all(seen[c] != "never claimed" for c in durable)
    if die_at == "after_commit":  # the dying batch's claims committed, their records never did
        assert any(s == "unknown" and c not in decisions for c, s in seen.items())
    if die_at == "after_audit":  # the dying batch's records are durable, nobody was told
        assert decisions - durable


def test_redis_batches_survive_redis_losing_the_scripts(redis_server: RedisServer, tmp_path: Path) -> None:
    """After a Redis restart the scripts are gone: the batch loads them again and runs the calls
    that failed, in order, so a queued completion is still seen by the next claim."""
    import redis.asyncio as aioredis

    target = Target("redis", redis_server.url, f"t{secrets.token_hex(6)}:")
    key = Secret(secrets.token_hex(32))

    async def run() -> None:
        store = target.open()
        (tmp_path / "audit").mkdir()
        audit = AuditWriter(tmp_path / "audit", key, "w1")
        await audit.start()
        commit = group_commit(store, None, audit)
        assert commit is not None
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            first = await commit.claim(_scope("a"), "h", 60, lease_s=LEASE_S,
                                       record={"request_id": "a", "phase": "decision", "decision": "allow"})
            assert first.recorded and isinstance(first.result, Owner)
            await client.script_flush()
            commit.complete(_scope("a"), StoredResponse(200, (), b"ok"), token=first.result.token, ttl_s=60)
            again = await commit.claim(_scope("a"), "h", 60, lease_s=LEASE_S)
            assert isinstance(again.result, Replay) and again.result.response.body == b"ok"
        finally:
            await client.aclose()
            await audit.close()
            await store.close()

    asyncio.run(run())
