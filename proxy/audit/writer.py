"""The durable, chained audit writer: one per process, one chain per writer.

``write`` returns only once the record is on disk (fdatasync). Concurrent writes share one
fsync (group commit): while one batch is being synced, new records queue and go out together in
the next, so throughput grows with concurrency while latency stays about one fsync. All file I/O
runs in one dedicated thread, so the event loop never blocks on the disk, and the order of the
chain is the order of the file.

With a :class:`CheckpointPolicy` the writer also keeps the Merkle tree of its lines (RFC 9162,
two hashes per line) and signs a checkpoint over it every N lines or T seconds, after every
seal, and at close, always once the lines it covers are durable (docs/audit.md, "Signed
checkpoints").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from proxy.audit import chain, layout, merkle
from proxy.audit.checkpointer import Checkpointer, CheckpointPolicy
from proxy.audit.record import check_record
from proxy.audit.reserve import DiskReserve
from proxy.errors import AuditReserveReached, NotReady, TrailFileError, UnsafeAuditRecord
from proxy.model.sensitive import Secret
from proxy.ops.metrics import Metrics

DEFAULT_MAX_SEGMENT_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_SEGMENT_AGE_S = 24 * 3600.0
MAX_ANCHORS = 256


def default_writer_id() -> str:
    """``host-pid-start``: unique per process, across hosts and restarts."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())[:64]
    return f"{host or 'host'}-{os.getpid()}-{time.time_ns() // 1000:x}"


def _not_writable(reason: str) -> NotReady:
    return NotReady(
        f"audit trail is not writable ({reason}); nothing is forwarded until the audit "
        "directory is writable again (check space and permissions)"
    )


@dataclass
class _Head:
    """Mutable position of this writer's chain (internal; guarded by the writer's lock)."""

    seg: int
    seq: int
    prev: bytes
    seg_bytes: int
    seg_lines: int
    seg_opened: float


class AuditWriter:
    """Appends records to this process's chain in ``directory``; fails closed with NotReady."""

    def __init__(
        self,
        directory: Path,
        key: Secret,
        writer_id: str,
        *,
        max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES,
        max_segment_age_s: float = DEFAULT_MAX_SEGMENT_AGE_S,
        durable: bool = True,
        clock: Callable[[], float] = time.time,
        checkpoints: CheckpointPolicy | None = None,
        reserve_bytes: int = 0,
    ) -> None:
        if not layout.WRITER_ID.fullmatch(writer_id):
            raise ValueError("writer_id must be 1-128 of [A-Za-z0-9._-], not starting with '.'")
        self._dir = Path(directory)
        self._chain_key = chain.key_bytes(key)
        self._writer = writer_id
        self._max_bytes = max_segment_bytes
        self._max_age = max_segment_age_s
        self._durable = durable
        self._clock = clock
        self._lock = threading.Lock()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._tkey = chain.MacKey(b"")
        self._trail_id = ""
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._head: _Head | None = None
        self._broken: str | None = None
        self._closed = False
        self._ckpt = Checkpointer(checkpoints, clock)
        self._ticker: asyncio.Task[None] | None = None
        #: below this much free space, expendable records are refused (README "Audit disk")
        self.reserve = DiskReserve(self._dir, reserve_bytes)

    @property
    def writer_id(self) -> str:
        return self._writer

    @property
    def checkpoint_error(self) -> str | None:
        """Why the last checkpoint could not be signed or stored; None if it was."""
        return self._ckpt.error

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Create or join the trail and open this writer's first segment (durably)."""
        await asyncio.get_running_loop().run_in_executor(self._io, self.start_sync)
        if self._ckpt.policy is not None and self._ticker is None:
            every_s = self._ckpt.policy.every_s
            self._ticker = asyncio.get_running_loop().create_task(self._tick(every_s))

    async def _tick(self, every_s: float) -> None:
        """Sign lines that wait longer than ``every_s`` for a checkpoint on a quiet writer."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(every_s)
            with contextlib.suppress(Exception):
                await loop.run_in_executor(self._io, self.checkpoint_sync)

    def checkpoint_sync(self, *, force: bool = False) -> None:
        """Sign a checkpoint now if one is due (or ``force``) and any line is unsigned."""
        with self._lock:
            if self._head is not None and self._broken is None and not self._closed \
                    and self._ckpt.due(force=force):
                self._checkpoint()

    def start_sync(self) -> None:
        with self._lock:
            try:
                self._start_locked()
            except TrailFileError as exc:
                raise _not_writable(str(exc)) from None
            except OSError as exc:
                raise _not_writable(f"{exc.strerror or exc} at {self._dir}") from None

    def _start_locked(self) -> None:
        if self._head is not None:
            return
        witness_dir = self._ckpt.policy.witness_dir if self._ckpt.policy else None
        if witness_dir is not None and not witness_dir.is_dir():
            raise _not_writable(f"the audit witness directory {witness_dir} does not exist "
                                "(its volume not mounted?)")
        trail = layout.ensure_trail(self._dir, self._chain_key, self._now())
        self._trail_id = trail.trail_id
        self._tkey = chain.trail_key(self._chain_key, trail.trail_id)
        lock_path = self._dir / f"{self._writer}{layout.LOCK_SUFFIX}"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, layout.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _not_writable(f"writer id {self._writer} is in use by another process") from None
        self._lock_fd = fd
        if self._writer in layout.list_chains(self._dir):
            raise _not_writable(f"writer id {self._writer} already has segments; ids are per run")
        self._open_segment(seg=0, seq=0, prev=chain.GENESIS_PREV)

    async def close(self) -> None:
        """Flush what is queued, seal the segment as final, release the writer id."""
        if self._closed:
            return
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ticker
        await asyncio.get_running_loop().run_in_executor(self._io, self.close_sync)
        self._io.shutdown(wait=True)

    def close_sync(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._fd is not None and self._head is not None and self._broken is None:
                    self._seal(final=True)
                    self._checkpoint()
                    (self._dir / f"{self._writer}{layout.LOCK_SUFFIX}").unlink(missing_ok=True)
            finally:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    # -- writing -----------------------------------------------------------------------------

    async def write(self, record: Mapping[str, Any]) -> None:
        """Append one record; returns once it is durable. Raises NotReady if it cannot be."""
        await self.submit(record)

    def submit(self, record: Mapping[str, Any]) -> asyncio.Future[None]:
        """Queue a record now (its place in the chain is fixed); the future ends when durable.

        For the outcome record, which need not delay the response: keep the future and log a
        failure from it. Refusals (secret-looking keys, closed or broken writer, an expendable
        record below the reserve) raise here.
        """
        check_record(record)
        if self._broken is not None or self._closed:
            raise _not_writable(self._broken or "writer is closed")
        if self.reserve.refuses(record):
            raise AuditReserveReached(
                "the audit disk is below its reserve; only orders and cancels are served until "
                "space is freed (README \"Audit disk\")")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((dict(record), fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop())
        return fut

    def headroom(self, metrics: Metrics | None = None) -> dict[str, object] | None:
        """Free space against the reserve, for /readyz (and a gauge); None when unknown."""
        return self.reserve.headroom(metrics)
    def position(self) -> tuple[int, int]:
        """(segment, byte offset) where the next record goes: whatever is appended after this
        call is at or after it (the sqlite group commit's journal mark, proxy.state.journal)."""
        head = self._head
        return (0, 0) if head is None else (head.seg, head.seg_bytes)

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The writer's I/O thread (proxy.state.group_commit appends from it with Redis)."""
        return self._io

    def append_batch(self, records: list[dict[str, Any]]) -> list[Exception | None]:
        """Append ``records`` with one fdatasync, on the calling thread; one error slot per
        record (None: durable). For the group commit, which makes the state store's batch and
        these records durable in one thread hop."""
        errors: list[Exception | None] = [None] * len(records)
        good: list[int] = []
        for i, rec in enumerate(records):
            try:
                check_record(rec)
            except Exception as exc:
                errors[i] = exc
            else:
                good.append(i)
        if good:
            for i, error in zip(good, self._write_batch([records[i] for i in good]), strict=True):
                errors[i] = error
        return errors

    def write_sync(self, record: Mapping[str, Any]) -> None:
        """Blocking ``write`` for command-line tools (no event loop)."""
        check_record(record)
        (error,) = self._write_batch([dict(record)])
        if error is not None:
            raise error

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                errors = await loop.run_in_executor(
                    self._io, self._write_batch, [rec for rec, _ in batch]
                )
            except Exception as exc:  # executor gone, or a bug: fail these closed
                errors = [_not_writable(type(exc).__name__)] * len(batch)
            for (_, fut), error in zip(batch, errors, strict=True):
                if fut.done():
                    continue
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)

    def _write_batch(self, records: list[dict[str, Any]]) -> list[Exception | None]:
        with self._lock:
            if self._broken is not None or self._closed:
                return [_not_writable(self._broken or "writer is closed")] * len(records)
            if self._head is None or self._fd is None:
                return [_not_writable("writer not started")] * len(records)
            try:
                self._rotate_if_due()
            except OSError as exc:
                self._broken = f"rotation failed: {exc.strerror or exc}"
                return [_not_writable(self._broken)] * len(records)
            errors = self._append(records)
            if self._broken is None and self._ckpt.due():
                self._checkpoint()
            return errors

    def _append(self, records: list[dict[str, Any]]) -> list[Exception | None]:
        head = self._head
        assert head is not None and self._fd is not None
        errors: list[Exception | None] = []
        buf = bytearray()
        leaves: list[bytes] = []
        seq, prev = head.seq, head.prev
        now: str | None = None
        for rec in records:
            if "ts" not in rec:
                now = now or self._now()
                rec["ts"] = now
            rec["_seq"] = seq
            try:
                line, mac = chain.seal_line(self._tkey, prev, rec)
            except (TypeError, orjson.JSONEncodeError) as exc:
                errors.append(UnsafeAuditRecord(f"audit record not serialisable: {exc}"))
                continue
            buf += line
            if self._ckpt.enabled:
                leaves.append(merkle.leaf_hash(line[:-1]))
            seq, prev = seq + 1, mac
            errors.append(None)
        if not buf:
            return errors
        try:
            self._write_all(bytes(buf))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if not self._undo_partial(head.seg_bytes):
                self._broken = f"write failed and could not be undone: {reason}"
            return [_not_writable(reason)] * len(records)
        try:
            if self._durable:
                os.fdatasync(self._fd)
        except OSError as exc:  # after a failed fsync the page cache cannot be trusted
            self._broken = f"fsync failed: {exc.strerror or exc}"
            return [_not_writable(self._broken)] * len(records)
        head.seq, head.prev = seq, prev
        self._ckpt.add_leaves(leaves)
        head.seg_bytes += len(buf)
        head.seg_lines += sum(1 for e in errors if e is None)
        return errors

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _undo_partial(self, good_size: int) -> bool:
        """Cut a failed batch back off so the file ends on a whole, chained record."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, good_size)
        except OSError:
            return False
        return True

    # -- segments ----------------------------------------------------------------------------

    def _rotate_if_due(self) -> None:
        head = self._head
        assert head is not None
        if head.seg_bytes < self._max_bytes and self._clock() - head.seg_opened < self._max_age:
            return
        seal_mac = self._seal(final=False)
        self._checkpoint()
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        self._open_segment(seg=head.seg + 1, seq=head.seq, prev=seal_mac)

    def _open_segment(self, *, seg: int, seq: int, prev: bytes) -> None:
        fields = chain.open_fields(
            trail_id=self._trail_id, writer=self._writer, seg=seg, seq=seq, ts=self._now(),
            anchors=self._anchors(), frontier=self._ckpt.frontier,
        )
        line, mac = chain.seal_line(self._tkey, prev, fields)
        # A segment appears only with its header line (written and synced under a temporary
        # name, then linked into place; the link fails like O_EXCL): a process killed while
        # rotating leaves no empty segment, whose chain no successor could anchor as closed.
        name = layout.segment_name(self._writer, seg)
        fd = os.open(self._dir / f".{name}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                     layout.FILE_MODE)
        self._fd = fd
        self._write_all(line)
        os.fsync(fd)
        os.link(self._dir / f".{name}.new", self._dir / name)
        os.unlink(self._dir / f".{name}.new")
        layout.fsync_dir(self._dir)
        self._ckpt.add(line[:-1])
        self._head = _Head(seg, seq + 1, mac, len(line), 1, self._clock())

    def _seal(self, *, final: bool) -> bytes:
        head = self._head
        assert head is not None and self._fd is not None
        fields = chain.seal_fields(
            writer=self._writer, seg=head.seg, seq=head.seq, records=head.seg_lines, final=final,
            ts=self._now(), anchors=self._anchors(),
        )
        line, mac = chain.seal_line(self._tkey, head.prev, fields)
        self._write_all(line)
        os.fsync(self._fd)
        self._ckpt.add(line[:-1])
        head.seq, head.prev = head.seq + 1, mac
        head.seg_bytes += len(line)
        head.seg_lines += 1
        return mac

    def _checkpoint(self) -> None:
        self._ckpt.sign(self._dir, self._trail_id, self._writer, self._now())

    def _anchors(self) -> tuple[chain.Anchor, ...]:
        """Heads of the other chains here, so deleting or cutting one is caught later.

        A chain whose writer's lock is free and whose end is not a final seal was abandoned
        (its process died); it is anchored ``closed`` at its last whole record, which turns
        any later cut or append to it into a verify failure.
        """
        chains = layout.list_chains(self._dir)
        chains.pop(self._writer, None)
        found: list[tuple[float, chain.Anchor]] = []
        for writer, segs in chains.items():
            path = self._dir / layout.segment_name(writer, segs[-1])
            lock_fd = layout.try_lock(self._dir / f"{writer}{layout.LOCK_SUFFIX}")
            try:
                line = layout.last_complete_line(path)
                anchor = chain.anchor_from_line(writer, line, dead=lock_fd is not None)
                if anchor is not None:
                    with contextlib.suppress(OSError):
                        found.append((path.stat().st_mtime, anchor))
            finally:
                if lock_fd is not None:
                    os.close(lock_fd)
        found.sort(key=lambda item: (-item[0], item[1].writer))
        return tuple(sorted((a for _, a in found[:MAX_ANCHORS]), key=lambda a: a.writer))

    def _now(self) -> str:
        return chain.rfc3339(dt.datetime.fromtimestamp(self._clock(), dt.UTC))
