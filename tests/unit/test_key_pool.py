"""The key pool: the least busy loaded key is leased, ties in turn, and nothing when none loaded."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from proxy.errors import NotReady
from proxy.exchanges.base import Credentials
from proxy.keys.pool import KeyPool
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey


def _creds(name: str) -> Credentials:
    return Credentials(api_key=name, key=HmacKey(Secret("s3cret-" + name)), version=1)


def _pool(*loaded: bool) -> KeyPool:
    pool = KeyPool(tuple(f"exchanges/k{i}" for i in range(len(loaded))))
    for i, ok in enumerate(loaded):
        if ok:
            pool.set(i, _creds(f"k{i}"))
    return pool


def test_key_pool_takes_turns_when_idle() -> None:
    pool = _pool(True, True, True)
    used = []
    for _ in range(6):
        with pool.lease() as (index, creds):
            used.append((index, creds.api_key))
    assert [i for i, _ in used] == [0, 1, 2, 0, 1, 2]
    assert all(key == f"k{i}" for i, key in used)


def test_key_pool_prefers_the_least_busy_key() -> None:
    pool = _pool(True, True)
    with ExitStack() as held:
        first = held.enter_context(pool.lease())[0]
        second = held.enter_context(pool.lease())[0]
        third = held.enter_context(pool.lease())[0]
        assert {first, second} == {0, 1}
        assert pool.in_flight() in ((2, 1), (1, 2)) and third in (0, 1)
    assert pool.in_flight() == (0, 0)


def test_key_pool_skips_keys_not_loaded_and_reports_them() -> None:
    pool = _pool(False, True)
    pool.set(0, None, "permission denied")
    for _ in range(3):
        with pool.lease() as (index, _):
            assert index == 1
    assert pool.missing() == ["key exchanges/k0: permission denied"]
    assert "s3cret" not in repr(pool)


def test_key_pool_with_no_key_loaded_is_not_ready() -> None:
    with pytest.raises(NotReady), _pool(False, False).lease():
        pass


def test_key_pool_reload_keeps_old_creds_on_failure() -> None:
    pool = _pool(True)
    pool.set(0, None, "vault down")
    with pool.lease() as (_, creds):
        assert creds.api_key == "k0"


def test_key_pool_forgets_a_key_whose_secret_is_gone() -> None:
    pool = _pool(True, True)
    assert pool.forget(0, "no secret at secret/exchanges/k0") is True
    assert pool.forget(0, "no secret at secret/exchanges/k0") is False  # already forgotten
    first = pool.first_loaded()
    assert first is not None and first.api_key == "k1"
    for _ in range(3):
        with pool.lease() as (index, _):
            assert index == 1
    assert pool.missing() == ["key exchanges/k0: no secret at secret/exchanges/k0"]
