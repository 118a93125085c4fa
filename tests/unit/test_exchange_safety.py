"""The pipeline's safety hooks, without I/O: nonce-rejection detection per SPECS.md, metrics
after an exchange answer, and store failures counted by ObservedStore."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.errors import AccountPaused, NotReady
from proxy.exchange_safety import ExchangeSafety, nonce_rejected, observe_store
from proxy.metrics import Metrics
from proxy.state.base import LockTimeout


@pytest.mark.parametrize(("exchange", "body", "expected"), [
    ("kraken", b'{"error":["EAPI:Invalid nonce"]}', True),
    ("bitfinex", b'["error",10114,"nonce: small"]', True),
    ("bitstamp", b'{"status":"error","reason":"Invalid nonce","code":"API0004"}', True),
    ("kraken", b'{"error":[],"result":{}}', False),
    ("binance", b'{"code":-1021,"msg":"Invalid nonce"}', False),  # not a nonce exchange
])
def test_nonce_rejected(exchange: str, body: bytes, expected: bool) -> None:
    assert nonce_rejected(exchange, body) is expected


def test_observe_counts_errors_and_pauses_the_account() -> None:
    metrics = Metrics()
    safety = ExchangeSafety(store=None, metrics=metrics, clock=lambda: 1000.0)

    async def run() -> None:
        await safety.observe("main", "binance", 429, (("Retry-After", "7"),), b'{"code":-1003}')
        with pytest.raises(AccountPaused) as exc:
            await safety.check_pause("main")
        assert exc.value.retry_after == 7
        await safety.check_pause("other")
        await safety.observe("k", "kraken", 200, (), b'{"error":["EAPI:Invalid nonce"]}')

    asyncio.run(run())
    text = metrics.render()
    assert 'proxy_account_pauses_total{account="main",status="429",worker=' in text
    assert 'proxy_upstream_errors_total{account="main",class="4xx",worker=' in text
    assert 'proxy_nonce_rejections_total{account="k",exchange="kraken",worker=' in text


class _FailingStore:
    async def get_flag(self, name: str, **kw: Any) -> str | None:
        raise NotReady("state store unreachable: redis: connection refused")

    async def next_nonce(self, key_id: str, unit: str, **kw: Any) -> int:
        raise LockTimeout("held by another request")


def test_observed_store_counts_failures_not_lock_timeouts() -> None:
    metrics = Metrics()
    store: Any = observe_store(_FailingStore(), metrics)  # type: ignore[arg-type]

    async def run() -> None:
        with pytest.raises(NotReady):
            await store.get_flag("x")
        with pytest.raises(LockTimeout):
            await store.next_nonce("k", "ms")

    asyncio.run(run())
    text = metrics.render()
    assert 'proxy_state_store_errors_total{op="get_flag",worker=' in text
    assert "next_nonce" not in text
