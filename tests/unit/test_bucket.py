"""The token bucket shared by the unauthenticated-refusal and stream limits (pure, clock given)."""

from __future__ import annotations

from proxy.guards.bucket import TokenBucket


def test_a_full_bucket_gives_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket.full(rate_per_s=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(100.4)  # 0.8 of a token
    assert bucket.take(100.5)  # one whole token after half a second at 2/s
    assert not bucket.take(100.5)
    assert [bucket.take(110.0) for _ in range(4)] == [True, True, True, False]  # never above the burst


def test_is_full_says_when_nothing_is_left_to_remember() -> None:
    bucket = TokenBucket.full(rate_per_s=1.0, burst=2, now=0.0)
    assert bucket.is_full(0.0)
    bucket.take(0.0)
    assert not bucket.is_full(0.5) and bucket.is_full(1.0)


def test_a_clock_going_back_neither_refills_nor_drains() -> None:
    bucket = TokenBucket.full(rate_per_s=1.0, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5) and bucket.take(11.0)
