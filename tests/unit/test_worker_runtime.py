"""How a worker process sets up the interpreter before serving: the collector (frozen start-up,
a first threshold above what requests in flight hold) and logging (no lookups no line uses)."""

from __future__ import annotations

import gc
import io
import json
import logging
from collections.abc import Iterator

import pytest

from proxy.server.supervisor import GC_THRESHOLD, configure_logging, tune_gc


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_start_up_is_frozen_and_cycles_are_still_collected(collector: None) -> None:
    tune_gc()
    assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == GC_THRESHOLD

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # a cycle made after start-up is garbage as before


def test_configured_lines_keep_their_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setattr(logging, "_srcfile", logging._srcfile)
    monkeypatch.setattr(logging, "logThreads", logging.logThreads)
    monkeypatch.setattr(logging, "logMultiprocessing", logging.logMultiprocessing)
    try:
        configure_logging("INFO")
        logging.getLogger("proxy.decision").info("decision", extra={"fields": {"request_id": "r1", "ms": 1.5}})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    line = json.loads(stream.getvalue())
    assert line["request_id"] == "r1" and line["ms"] == 1.5 and line["logger"] == "proxy.decision"
    assert line["level"] == "info" and isinstance(line["pid"], int) and line["ts"].endswith("Z")
