"""Unauthenticated refusals (issue 14, case 2): a token bucket per source address and one
aggregate audit record per source and interval."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from proxy.guards import unauthenticated as mod
from proxy.guards.unauthenticated import UnauthenticatedRefusals


def test_each_source_gets_a_burst_then_its_rate_and_one_aggregate_record() -> None:
    now = [0.0]
    written: list[Mapping[str, Any]] = []

    async def write(record: Mapping[str, Any]) -> None:
        written.append(record)

    guard = UnauthenticatedRefusals(write, rate_per_s=10, burst=20, clock=lambda: now[0])
    answers = [guard.admit("10.0.0.1") for _ in range(25)]
    assert answers == [True] * 20 + [False] * 5
    assert guard.admit("10.0.0.2")  # another source has its own bucket
    now[0] += 0.5  # five tokens back
    assert [guard.admit("10.0.0.1") for _ in range(6)] == [True] * 5 + [False]
    asyncio.run(guard.flush())
    by_source = {r["source"]: r for r in written}
    assert set(by_source) == {"10.0.0.1", "10.0.0.2"}
    assert (by_source["10.0.0.1"]["count"], by_source["10.0.0.1"]["rate_limited"]) == (31, 6)
    assert by_source["10.0.0.1"]["phase"] == "aggregate" and by_source["10.0.0.1"]["rule"] == "unauthenticated"
    assert not guard.admit("10.0.0.1")  # a flush grants no new burst
    written.clear()
    asyncio.run(guard.flush())
    assert [r["count"] for r in written] == [1]


def test_sources_beyond_the_table_share_one_bucket(monkeypatch: Any) -> None:
    monkeypatch.setattr(mod, "MAX_SOURCES", 3)

    async def write(record: Mapping[str, Any]) -> None:
        return None

    guard = UnauthenticatedRefusals(write, burst=2, clock=lambda: 0.0)
    for n in range(3):
        guard.admit(f"10.0.0.{n}")
    assert [guard.admit(f"10.1.0.{n}") for n in range(3)] == [True, True, False]
