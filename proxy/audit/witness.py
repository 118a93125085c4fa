"""Where checkpoints are kept: beside the trail, and in witnesses the writer cannot rewrite.

    {audit dir}/{writer}.checkpoints.jsonl       the writer's own checkpoints
    {witness dir}/{trail id}/{writer}.jsonl      the same lines, on another volume

A checkpoint is appended (``O_APPEND``) and fsynced to each place, always after the records it
covers are durable, so a crash can leave records without a checkpoint but never a checkpoint
without its records. The local file alone cannot reveal a trail cut back together with it;
the witness can, as long as it is somewhere the proxy can only append to (another volume,
mounted or ``chattr +a`` append-only, or shipped off the host).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from proxy.audit import checkpoint, layout
from proxy.errors import CheckpointError


@dataclass(frozen=True)
class Entry:
    """One checkpoint line as read back: where it is, and the checkpoint or why it is bad."""

    file: str
    line: int
    checkpoint: checkpoint.Checkpoint | None
    error: str | None = None


def local_path(directory: Path, writer: str) -> Path:
    return directory / f"{writer}{layout.CHECKPOINT_SUFFIX}"


def witness_path(witness_dir: Path, trail_id: str, writer: str) -> Path:
    return witness_dir / trail_id / f"{writer}.jsonl"


def append(path: Path, line: bytes) -> None:
    """Append one line durably; creates the file (and its trail folder) the first time.

    Never the witness directory itself: if its volume is not mounted, writing to the empty
    mount point would put the witness back on the trail's own disk."""
    fresh = not path.exists()
    if fresh:
        path.parent.mkdir(mode=layout.DIR_MODE, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, layout.FILE_MODE)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if fresh:
        layout.fsync_dir(path.parent)


def read(path: Path, label: str | None = None) -> Iterator[Entry]:
    """Every checkpoint line of a file (a torn last line, left by a crash, is skipped)."""
    name = label or path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # not newline-terminated: a crash while appending
    for n, raw in enumerate(lines, start=1):
        try:
            yield Entry(name, n, checkpoint.parse_line(raw))
        except CheckpointError as exc:
            yield Entry(name, n, None, str(exc))


def local_writers(directory: Path) -> list[str]:
    """Writers with a local checkpoint file."""
    suffix = layout.CHECKPOINT_SUFFIX
    return sorted(n[: -len(suffix)] for n in os.listdir(directory) if n.endswith(suffix))


def witness_writers(witness_dir: Path, trail_id: str) -> list[str]:
    folder = witness_dir / trail_id
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(n[: -len(".jsonl")] for n in names if n.endswith(".jsonl"))


__all__ = ["Entry", "append", "local_path", "local_writers", "read", "witness_path", "witness_writers"]
