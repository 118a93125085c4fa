"""AuditWriter: durable before return, group commit, rotation, fail closed, no secrets."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from proxy.audit.chain import KIND_OPEN
from proxy.audit.verify import verify
from proxy.audit.writer import AuditWriter, default_writer_id
from proxy.errors import NotReady, UnsafeAuditRecord
from proxy.model.sensitive import Secret
from tests.audit.conftest import decision, write_trail


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(threading.current_thread().name)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


def test_writer_write_is_fsynced_in_a_thread_before_returning(
    tmp_path: Path, key: Secret, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_fsyncs(monkeypatch)

    async def run() -> None:
        w = AuditWriter(tmp_path, key, "w1")
        await w.start()
        await w.write(decision(1))
        assert len(calls) == 1
        await w.close()

    asyncio.run(run())
    assert calls[0].startswith("audit-writer")


def test_writer_group_commit_shares_fsyncs(
    tmp_path: Path, key: Secret, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_fsyncs(monkeypatch)

    async def run() -> None:
        w = AuditWriter(tmp_path, key, "w1")
        await w.start()
        await asyncio.gather(*(w.write(decision(i)) for i in range(200)))
        await w.close()

    asyncio.run(run())
    assert len(calls) <= 3
    report = verify(tmp_path, key)
    assert report.ok and report.records == 200


def test_writer_rotates_by_size(tmp_path: Path, key: Secret) -> None:
    write_trail(tmp_path, key, records=50, max_segment_bytes=3000)
    assert len(list(tmp_path.glob("w1.*.jsonl"))) > 3
    report = verify(tmp_path, key)
    assert report.ok and report.records == 50


@pytest.mark.parametrize("step", ["header", "link"])
def test_a_writer_dying_while_it_rotates_leaves_no_empty_segment(
    tmp_path: Path, key: Secret, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """The process ends while it rotates (before the new segment's header is written, or before
    the segment is in place): no segment exists without its header, so a successor still finds
    the chain's last line and anchors it as closed."""
    w = AuditWriter(tmp_path, key, "victim", max_segment_bytes=3000)
    w.start_sync()
    write_all = AuditWriter._write_all

    def dying_write(self: AuditWriter, data: bytes) -> None:
        if step == "header" and f'"_kind":"{KIND_OPEN}"'.encode() in data:
            raise SystemExit("killed while rotating")
        write_all(self, data)

    def dying_link(src: Any, dst: Any) -> None:
        raise SystemExit("killed while rotating")

    for i in range(5):
        w.write_sync(decision(i))
    monkeypatch.setattr(AuditWriter, "_write_all", dying_write)
    if step == "link":
        monkeypatch.setattr(os, "link", dying_link)
    with pytest.raises(SystemExit):
        for i in range(5, 100):
            w.write_sync(decision(i))
    monkeypatch.undo()
    assert w._lock_fd is not None
    os.close(w._lock_fd)  # the kernel frees a dead process's lock
    assert all(f.stat().st_size > 0 for f in tmp_path.glob("victim.*.jsonl"))
    successor = AuditWriter(tmp_path, key, "successor")
    successor.start_sync()
    successor.close_sync()
    report = verify(tmp_path, key)
    assert report.ok, report.summary()
    assert report.open_chains == ()


def test_writer_rotates_by_age(tmp_path: Path, key: Secret) -> None:
    now = [1_700_000_000.0]

    async def run() -> None:
        w = AuditWriter(tmp_path, key, "w1", max_segment_age_s=60, clock=lambda: now[0])
        await w.start()
        await w.write(decision(0))
        now[0] += 61
        await w.write(decision(1))
        await w.close()

    asyncio.run(run())
    assert sorted(p.name for p in tmp_path.glob("w1.*")) == ["w1.000000.jsonl", "w1.000001.jsonl"]
    assert verify(tmp_path, key).ok


def test_writer_close_seals_final_and_refuses_later_writes(tmp_path: Path, key: Secret) -> None:
    async def run() -> AuditWriter:
        w = AuditWriter(tmp_path, key, "w1")
        await w.start()
        await w.write(decision(0))
        await w.close()
        return w

    w = asyncio.run(run())
    assert b'"_final":true' in (tmp_path / "w1.000000.jsonl").read_bytes().splitlines()[-1]
    assert not (tmp_path / "w1.lock").exists()
    with pytest.raises(NotReady):
        w.write_sync(decision(1))
    assert verify(tmp_path, key).open_chains == ()


def test_writer_failed_write_raises_not_ready_and_recovers(
    tmp_path: Path, key: Secret, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    fail = [True]

    def flaky(fd: int, data: Any) -> int:
        if fail[0]:
            fail[0] = False
            real_write(fd, bytes(data)[:7])  # a partial line reaches the file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    w = AuditWriter(tmp_path, key, "w1")
    w.start_sync()
    monkeypatch.setattr(os, "write", flaky)
    with pytest.raises(NotReady, match="not writable"):
        w.write_sync(decision(0))
    w.write_sync(decision(1))
    w.close_sync()
    report = verify(tmp_path, key)
    assert report.ok and report.records == 1


def test_writer_failed_fsync_fails_closed_for_good(
    tmp_path: Path, key: Secret, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    async def run() -> None:
        w = AuditWriter(tmp_path, key, "w1")
        await w.start()
        monkeypatch.setattr(os, "fdatasync", broken)
        with pytest.raises(NotReady, match="fsync"):
            await w.write(decision(0))
        monkeypatch.undo()
        with pytest.raises(NotReady):
            await w.write(decision(1))
        await w.close()

    asyncio.run(run())


def test_writer_start_in_unwritable_place_raises_not_ready(tmp_path: Path, key: Secret) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")

    async def run() -> None:
        await AuditWriter(blocker / "audit", key, "w1").start()

    with pytest.raises(NotReady, match="audit trail is not writable"):
        asyncio.run(run())


def test_writer_refuses_a_reused_writer_id(tmp_path: Path, key: Secret) -> None:
    write_trail(tmp_path, key, records=1)
    with pytest.raises(NotReady, match="already has segments"):
        AuditWriter(tmp_path, key, "w1").start_sync()
    live = AuditWriter(tmp_path, key, "w2")
    live.start_sync()
    with pytest.raises(NotReady, match="in use"):
        AuditWriter(tmp_path, key, "w2").start_sync()
    live.close_sync()


def test_writer_unserialisable_record_fails_alone(tmp_path: Path, key: Secret) -> None:
    async def run() -> list[BaseException | None]:
        w = AuditWriter(tmp_path, key, "w1")
        await w.start()
        results = await asyncio.gather(
            w.write(decision(0)), w.write({"request_id": "x", "bad": object()}),
            w.write(decision(2)), return_exceptions=True,
        )
        await w.close()
        return list(results)

    ok1, bad, ok2 = asyncio.run(run())
    assert ok1 is None and ok2 is None and isinstance(bad, UnsafeAuditRecord)
    assert verify(tmp_path, key).records == 2


def test_writer_canary_secret_never_reaches_the_files(tmp_path: Path) -> None:
    canary = "c0ffee" * 10 + "abcd"
    key = Secret(canary)
    w = AuditWriter(tmp_path, key, "w1")
    w.start_sync()
    for bad in ({"signature": canary}, {"headers": {"X-MBX-APIKEY": canary}},
                {"value": Secret(canary)}, {"intent": {"token": canary}}):
        with pytest.raises(UnsafeAuditRecord) as info:
            w.write_sync(bad)
        assert canary not in str(info.value)
    w.write_sync(decision(0))
    w.close_sync()
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert canary.encode() not in data and bytes.fromhex(canary) not in data
    assert canary not in repr(w.__dict__)


def test_writer_rejects_bad_writer_ids_and_keys(tmp_path: Path, key: Secret) -> None:
    with pytest.raises(ValueError, match="writer_id"):
        AuditWriter(tmp_path, key, "../evil")
    with pytest.raises(ValueError, match="64 hex"):
        AuditWriter(tmp_path, Secret("short"), "w1")
    assert AuditWriter(tmp_path, key, default_writer_id()).writer_id


def test_writer_submit_keeps_order_and_resolves_when_durable(tmp_path: Path, key: Secret) -> None:
    async def run() -> None:
        w = AuditWriter(tmp_path, key, "w1")
        await w.start()
        futs = [w.submit(decision(i)) for i in range(5)]
        await asyncio.gather(*futs)
        await w.close()

    asyncio.run(run())
    from proxy.audit.reader import iter_records

    assert [r["request_id"] for r in iter_records(tmp_path, key)] == [f"req-{i}" for i in range(5)]
