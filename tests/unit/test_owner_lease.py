"""The idempotency lease outlives any live attempt, so a slow order is never placed twice."""

from __future__ import annotations

import pytest

from proxy.pipeline.app import owner_lease_s
from proxy.pipeline.send import NONCE_LOCK_TIMEOUT_S
from proxy.state.base import DEFAULT_RECORD_TTL_S


@pytest.mark.parametrize("upstream_s", [0.5, 10.0, 60.0, 120.0])
@pytest.mark.parametrize("vault_s", [1.0, 5.0, 60.0])
def test_the_lease_covers_two_lookups_and_a_placement(upstream_s: float, vault_s: float) -> None:
    one_send = NONCE_LOCK_TIMEOUT_S + vault_s + upstream_s  # lock wait, Transit signature, exchange
    lease = owner_lease_s(upstream_s, vault_s)
    assert lease > 3 * one_send
    assert lease < DEFAULT_RECORD_TTL_S  # a dead owner is still taken over long before expiry


def test_a_long_upstream_timeout_no_longer_fits_the_old_fixed_lease() -> None:
    assert owner_lease_s(60.0, 5.0) > 30.0 + 60.0
