"""The hot path's random ids are UUID4s as the standard library reads them, never repeat, and a
forked worker never hands out its parent's bytes."""

from __future__ import annotations

import os
import uuid

from proxy.pipeline.ids import random_hex, random_uuid


def test_ids_are_random_uuid4s_in_both_forms() -> None:
    for _ in range(600):  # more than one 4 KiB draw
        text = random_uuid()
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
        hexed = uuid.UUID(hex=random_hex())
        assert hexed.version == 4 and hexed.variant == uuid.RFC_4122


def test_ids_never_repeat() -> None:
    ids = [random_hex() for _ in range(5000)] + [random_uuid().replace("-", "") for _ in range(5000)]
    assert len(set(ids)) == len(ids)


def test_a_forked_child_draws_its_own() -> None:
    random_hex()  # the parent holds a draw the child must not reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, "".join(random_hex() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = "".join(random_hex() for _ in range(8))
    assert len(child) == len(parent) == 256 and child != parent
