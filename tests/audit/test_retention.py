"""Retention: pruned segments leave a MACed tombstone, so verify still passes, and only then."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from proxy.audit import chain
from proxy.audit.retention import prune
from proxy.audit.verify import verify
from proxy.errors import AuditIntegrityError
from proxy.model.sensitive import Secret
from tests.audit.conftest import lines, put_lines, write_trail

LATER = time.time() + 3600


def _rotated(d: Path, key: Secret, writer: str = "w1", close: bool = True) -> int:
    write_trail(d, key, writer, records=40, max_segment_bytes=2000, close=close)
    return len(list(d.glob(f"{writer}.*.jsonl")))


def test_retention_prune_keeps_the_trail_verifiable(tmp_path: Path, key: Secret) -> None:
    segs = _rotated(tmp_path, key, close=False)
    result = prune(tmp_path, key, older_than_s=60, clock=lambda: LATER)
    assert len(result.removed) == segs - 1  # the open segment stays
    report = verify(tmp_path, key)
    assert report.ok, report.summary()
    assert report.segments == 1


def test_retention_whole_closed_chain_can_go(tmp_path: Path, key: Secret) -> None:
    _rotated(tmp_path, key, "old")
    write_trail(tmp_path, key, "new", records=2, close=False)  # anchors old's final seal
    prune(tmp_path, key, older_than_s=0, clock=lambda: LATER)
    assert [p.name for p in tmp_path.glob("*.jsonl") if p.name != "PRUNED.jsonl"] == [
        "new.000000.jsonl"
    ]
    report = verify(tmp_path, key)
    assert report.ok, report.summary()


def test_retention_deleting_the_tombstones_is_detected(tmp_path: Path, key: Secret) -> None:
    _rotated(tmp_path, key, close=False)
    prune(tmp_path, key, older_than_s=60, clock=lambda: LATER)
    (tmp_path / "PRUNED.jsonl").unlink()
    report = verify(tmp_path, key)
    assert report.first_bad is not None and "deleted" in report.first_bad.reason


def test_retention_forged_tombstone_is_detected(tmp_path: Path, key: Secret) -> None:
    _rotated(tmp_path, key, close=False)
    prune(tmp_path, key, older_than_s=60, clock=lambda: LATER)
    path = tmp_path / "PRUNED.jsonl"
    rec = orjson.loads(lines(path)[0])
    rec["upto"] += 1
    put_lines(path, [chain.canonical(rec) + b"\n"])
    report = verify(tmp_path, key)
    assert report.first_bad is not None
    assert report.first_bad.location.file == "PRUNED.jsonl"


def test_retention_refuses_to_prune_a_tampered_trail(tmp_path: Path, key: Secret) -> None:
    _rotated(tmp_path, key)
    seg = tmp_path / "w1.000000.jsonl"
    content = lines(seg)
    del content[3]
    put_lines(seg, content)
    with pytest.raises(AuditIntegrityError, match="refusing to prune a failing trail"):
        prune(tmp_path, key, older_than_s=0, clock=lambda: LATER)
    assert seg.exists()
