"""A token bucket: at most ``burst`` at once, refilled at ``rate_per_s``.

Pure (the clock is an argument), so the per-source limit on requests without a token and the
per-stream limit on audited stream messages share one tested piece of arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """Mutable by design: one per source or stream, owned by one event loop."""

    rate_per_s: float
    burst: int
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate_per_s: float, burst: int, now: float) -> TokenBucket:
        return cls(rate_per_s, burst, float(burst), now)

    def take(self, now: float) -> bool:
        """Spend one token if there is one (after refilling up to ``now``)."""
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def refill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.stamp) * self.rate_per_s)
        self.stamp = max(self.stamp, now)

    def is_full(self, now: float) -> bool:
        """Whether it would be full at ``now`` (nothing left to remember)."""
        return self.tokens + max(0.0, now - self.stamp) * self.rate_per_s >= self.burst
