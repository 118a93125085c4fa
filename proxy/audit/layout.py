"""Where things live in an audit directory, and the small file operations shared by all.

    TRAIL.json                        trail id + its MAC under the chain key
    PRUNED.jsonl                      retention tombstones (one MACed line per pruning)
    {writer}.{segment:06d}.jsonl      one writer's chain, cut into segments
    {writer}.lock                     held (flock) while that writer runs
    {writer}.checkpoints.jsonl        that writer's signed checkpoints (witness.py)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from proxy.audit import chain
from proxy.errors import TrailFileError

TRAIL_FILE = "TRAIL.json"
TOMBSTONE_FILE = "PRUNED.jsonl"
SEGMENT_SUFFIX = ".jsonl"
LOCK_SUFFIX = ".lock"
CHECKPOINT_SUFFIX = ".checkpoints.jsonl"
WRITER_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_SEGMENT = re.compile(r"(?P<writer>[A-Za-z0-9_-][A-Za-z0-9._-]{0,127})\.(?P<seg>\d{6,})\.jsonl")
FILE_MODE = 0o640
DIR_MODE = 0o750
_TAIL_WINDOW = 1 << 16



@dataclass(frozen=True)
class Trail:
    """The identity of one audit directory."""

    trail_id: str
    created: str


def segment_name(writer: str, seg: int) -> str:
    return f"{writer}.{seg:06d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> tuple[str, int] | None:
    m = _SEGMENT.fullmatch(name)
    return (m["writer"], int(m["seg"])) if m else None


def list_chains(directory: Path) -> dict[str, list[int]]:
    """Writer id -> its segment numbers, ascending. Unrelated files are not included."""
    chains: dict[str, list[int]] = {}
    for name in os.listdir(directory):
        parsed = parse_segment_name(name)
        if parsed:
            chains.setdefault(parsed[0], []).append(parsed[1])
    for segs in chains.values():
        segs.sort()
    return chains


def stray_files(directory: Path) -> list[str]:
    """``*.jsonl`` files that are neither segments nor tombstones: planted or misnamed."""
    return sorted(
        n for n in os.listdir(directory)
        if n.endswith(SEGMENT_SUFFIX) and n != TOMBSTONE_FILE and parse_segment_name(n) is None
        and not n.endswith(CHECKPOINT_SUFFIX)
    )


def fsync_dir(directory: Path) -> None:
    """Make a new or renamed entry durable, not just its contents."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_trail(directory: Path, chain_key: chain.MacKey) -> Trail:
    path = directory / TRAIL_FILE
    try:
        raw = orjson.loads(path.read_bytes())
        trail_id, created, mac = raw["trail_id"], raw["created"], raw["mac"]
    except FileNotFoundError:
        raise TrailFileError(f"{TRAIL_FILE} is missing") from None
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise TrailFileError(f"{TRAIL_FILE} is unreadable or malformed ({exc})") from None
    if not (isinstance(trail_id, str) and isinstance(mac, str) and isinstance(created, str)):
        raise TrailFileError(f"{TRAIL_FILE} is malformed")
    if not chain.mac_equal(bytes.fromhex(chain.trail_id_mac(chain_key, trail_id)), mac):
        raise TrailFileError(
            f"{TRAIL_FILE} does not match the chain key: wrong key, or the file was replaced"
        )
    return Trail(trail_id, created)


def read_trail_id_unverified(directory: Path) -> str | None:
    """The trail id without checking its MAC, for keyless reading only."""
    try:
        value = orjson.loads((directory / TRAIL_FILE).read_bytes())["trail_id"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def ensure_trail(directory: Path, chain_key: chain.MacKey, created: str) -> Trail:
    """Read TRAIL.json, creating it atomically (link, never overwrite) if this is a new trail.

    Refuses to invent a trail id for a directory that already holds segments: a missing
    TRAIL.json there means tampering, and a fresh id would hide it.
    """
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path = directory / TRAIL_FILE
    if not path.exists():
        if list_chains(directory):
            raise TrailFileError(f"{TRAIL_FILE} is missing but segments exist; run audit verify")
        trail_id = str(uuid.uuid4())
        body = {"trail_id": trail_id, "created": created,
                "mac": chain.trail_id_mac(chain_key, trail_id)}
        tmp = directory / f".{TRAIL_FILE}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            os.write(fd, orjson.dumps(body, option=orjson.OPT_SORT_KEYS) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # another writer may have won the race; theirs is the trail
        tmp.unlink()
        fsync_dir(directory)
    return read_trail(directory, chain_key)


def last_complete_line(path: Path) -> bytes | None:
    """The last newline-terminated line of a file (a torn tail after it is ignored)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_WINDOW)
            f.seek(start)
            data = f.read()
    except OSError:
        return None
    end = data.rfind(b"\n")
    if end < 0:
        return None
    begin = data.rfind(b"\n", 0, end) + 1
    if begin == 0 and start > 0:
        return None  # a line longer than the window: not worth anchoring
    return data[begin:end]


def try_lock(path: Path) -> int | None:
    """Take an exclusive flock without waiting; the fd (to keep it) or None if held."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
