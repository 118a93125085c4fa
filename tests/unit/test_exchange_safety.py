"""The pipeline's safety hooks, without I/O: nonce-rejection detection per docs/exchanges.md, metrics
after an exchange answer, and store failures counted by ObservedStore."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy import exchanges
from proxy.errors import AccountPaused, LockTimeout, NotReady, RateLimited
from proxy.guards.cooldowns import egress_scope
from proxy.guards.hooks import ExchangeSafety, nonce_rejected, observe_store
from proxy.guards.prices import ReferencePrices
from proxy.model.request import Inbound
from proxy.ops.metrics import Metrics
from proxy.upstream import UpstreamResponse


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
    assert 'proxy_account_pauses_total{account="main",status="429"}' in text
    assert 'proxy_upstream_errors_total{account="main",class="4xx"}' in text
    assert 'proxy_nonce_rejections_total{account="k",exchange="kraken"}' in text


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
    assert 'proxy_state_store_errors_total{op="get_flag"}' in text
    assert "next_nonce" not in text


def test_egress_scope_is_per_exchange_and_host_for_ip_counting_exchanges() -> None:
    assert egress_scope("binance", "https://api.binance.com") == "binance@api.binance.com"
    assert egress_scope("binance", "http://127.0.0.1:8123") == "binance@127.0.0.1"  # any port: one IP
    assert egress_scope("kraken", "https://api.kraken.com") is None  # counted per key


def _ip_safety() -> ExchangeSafety:
    safety = ExchangeSafety(store=None, metrics=Metrics(), clock=lambda: 1000.0)
    safety.know_accounts([("bn-a", "binance", "https://api.binance.com"),
                          ("bn-b", "binance", "https://api.binance.com"),
                          ("bn-us", "binance", "https://api.binance.us"),
                          ("kr", "kraken", "https://api.kraken.com")])
    return safety


def test_a_binance_418_bans_every_account_behind_the_same_ip_a_429_only_its_own() -> None:
    async def run() -> None:
        safety = _ip_safety()
        await safety.observe("bn-a", "binance", 429, (("Retry-After", "7"),), b"{}")
        with pytest.raises(AccountPaused):
            await safety.check_pause("bn-a")
        await safety.check_pause("bn-b")  # a 429 stays with its account
        await safety.observe("bn-b", "binance", 418, (), b'{"code":-1003}')
        for account in ("bn-a", "bn-b"):
            with pytest.raises(AccountPaused) as exc:
                await safety.check_pause(account)
            assert exc.value.retry_after == 120 and exc.value.rule == "exchange_cooldown"
        with pytest.raises(AccountPaused, match="IP address"):
            await safety.check_pause("bn-b")  # the refusal says why
        await safety.check_pause("bn-us")  # another host
        await safety.check_pause("kr")

    asyncio.run(run())


def test_binance_weight_budget_is_shared_by_the_accounts_behind_one_ip() -> None:
    prepared = exchanges.get("binance").prepare(Inbound("GET", "/api/v3/account", b"", (), b""))

    async def run() -> None:
        safety = _ip_safety()
        await safety.spend_weight("bn-a", "binance", 50, prepared)   # 20
        await safety.spend_weight("bn-b", "binance", 50, prepared)   # 40
        with pytest.raises(RateLimited):
            await safety.spend_weight("bn-a", "binance", 50, prepared)
        await safety.spend_weight("bn-us", "binance", 50, prepared)  # another IP budget

    asyncio.run(run())


class _BannedTicker:
    async def send(self, base_url: str, out: Any) -> UpstreamResponse:
        return UpstreamResponse(418, (), b'{"code":-1003,"msg":"Way too many requests; IP banned"}', 1.0)


def test_a_reference_price_answered_418_bans_the_accounts_behind_that_ip() -> None:
    """Reference prices are fetched for no one account: their 429/418 applies to every account
    of that exchange at that base URL."""
    safety = _ip_safety()
    prices = ReferencePrices(_BannedTicker())
    prices.on_answer = safety.observe_url

    async def run() -> None:
        assert await prices.get(exchanges.get("binance"), "https://api.binance.com", "BTCUSDT") is None
        for account in ("bn-a", "bn-b"):
            with pytest.raises(AccountPaused):
                await safety.check_pause(account)
        await safety.check_pause("bn-us")
        await safety.check_pause("kr")

    asyncio.run(run())
