"""Exchange-side safety through real proxy processes (2 workers, real OpenBao, strict emulators):
an exchange 429 pauses the account for every worker, policy rate limits hold exactly across
workers (sqlite and Redis), account weight budgets follow Binance's weights, withdraw-capable
keys are refused, and /metrics shows all of it."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from proxy.audit.reader import iter_records
from proxy.guards.cooldowns import egress_scope, pause_flag
from proxy.state import open_store
from tests.support.redis_server import RedisServer
from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

MAIN = {"api_key": "binanceMainKey0123456789", "api_secret": "a" * 64}
OTHER = {"api_key": "binanceOtherKey012345678", "api_secret": "b" * 64}
KRAKEN = {"api_key": "kraken-safety-key-01", "api_secret": base64.b64encode(b"kraken-secret-" * 5).decode()}

BOT = """
version = 1
client = "bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]

[[grants]]
account = "binance-other"
allow = ["read", "trade", "cancel"]

[[grants]]
account = "kraken-main"
allow = ["read"]
"""
FAST = """
version = 1
client = "fast"
rate_limit = "5/hour"

[[grants]]
account = "binance-other"
allow = ["read", "trade", "cancel"]
"""
CALM = """
version = 1
client = "calm"

[[grants]]
account = "binance-other"
allow = ["read", "trade", "cancel"]
rate_limit = "100/hour"
"""


def _get(stack: Stack, client: str, account: str, path: str, **params: str) -> httpx.Response:
    # a new connection each time, so the kernel spreads requests over both workers
    return httpx.get(f"{stack.proxy_url}/x/{account}{path}", params=params, timeout=15,
                     headers={"Proxy-Authorization": f"Bearer {stack.token(client)}", "Connection": "close"})


def _order(stack: Stack, client: str, account: str) -> httpx.Response:
    data = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
            "quantity": "0.001", "price": "50000"}
    return httpx.post(f"{stack.proxy_url}/x/{account}/api/v3/order", data=data, timeout=15,
                      headers={"Proxy-Authorization": f"Bearer {stack.token(client)}", "Connection": "close"})


def _rids(responses: list[httpx.Response]) -> set[str]:
    return {r.headers["x-proxy-request-id"] for r in responses}


def _pids(stack: Stack, request_ids: set[str]) -> set[int]:
    """The worker pids that answered these requests, from the proxy's JSON decision log."""
    pids = set()
    for line in stack.proxy_log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("request_id") in request_ids:
            pids.add(entry["pid"])
    return pids


def _metrics(stack: Stack) -> str:
    """/metrics of the whole proxy (whichever worker answers sums every worker's counters, each
    written to the run directory as it changes)."""
    return httpx.get(stack.admin_url + "/metrics", timeout=5, headers={"Connection": "close"}).text


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [AccountSpec("binance-main", "binance", MAIN), AccountSpec("binance-other", "binance", OTHER),
                AccountSpec("kraken-main", "kraken", KRAKEN)]
    with start_stack(tmp_path_factory.mktemp("safety"), accounts,
                     {"bot": BOT, "fast": FAST, "calm": CALM}, workers=2) as s:
        yield s


def test_exchange_429_pauses_the_account_on_every_worker(stack: Stack) -> None:
    emulator = stack.emulator("binance-main")
    assert _order(stack, "bot", "binance-main").status_code == 200
    emulator.rate_limit(429, retry_after="6")
    first = _order(stack, "bot", "binance-main")
    # the bot that met the exchange's 429 gets the exchange's answer, unchanged
    assert first.status_code == 429 and first.json()["code"] == -1003, first.text
    assert "x-proxy-error" not in first.headers and first.headers["retry-after"] == "6"
    paused_at = time.monotonic()
    time.sleep(0.6)  # other workers re-read "not paused" at most every 0.25 s
    seen = len(emulator.recorder.all())
    refused = [_get(stack, "bot", "binance-main", "/api/v3/openOrders", symbol="BTCUSDT")]
    # new connections until both workers have answered (the kernel, not the test, picks which
    # worker accepts; under load one may take many in a row)
    while len(refused) < 40 and (len(refused) < 9 or len(_pids(stack, _rids(refused))) < 2):
        refused.append(_order(stack, "bot", "binance-main"))
    for r in refused:
        assert r.status_code == 503 and r.headers["x-proxy-error"] == "account_paused", r.text
        assert proxy_error(r)["rule"] == "exchange_cooldown"
        assert 1 <= int(r.headers["retry-after"]) <= 6
    assert len(emulator.recorder.all()) == seen, "nothing more reached the exchange"
    assert len(_pids(stack, _rids(refused))) == 2, "both workers refused"
    # audited as denied, with the rule
    time.sleep(0.1)
    rid = refused[0].headers["x-proxy-request-id"]
    record = next(r for r in iter_records(stack.dir / "audit") if r["request_id"] == rid)
    assert record["decision"] == "deny" and record["rule"] == "exchange_cooldown"
    # other accounts are unaffected
    assert _order(stack, "bot", "binance-other").status_code == 200
    # the cool-down ends by itself
    time.sleep(max(0.0, 6.3 - (time.monotonic() - paused_at)))
    assert _order(stack, "bot", "binance-main").status_code == 200
    text = _metrics(stack)
    assert re.search(r'proxy_account_pauses_total\{account="binance-main",status="429"\} 1', text)
    assert re.search(r'proxy_upstream_errors_total\{account="binance-main",class="4xx"\} 1', text)


def test_exchange_418_ban_pauses_every_binance_account_behind_the_ip(stack: Stack) -> None:
    """Binance bans an IP address, not a key: a 418 on one account pauses every Binance account
    of this proxy (same host), on every worker; other exchanges go on. Without Retry-After the
    default applies."""
    stack.emulator("binance-other").rate_limit(418)
    r = _get(stack, "bot", "binance-other", "/api/v3/account")
    assert r.status_code == 418
    time.sleep(0.6)
    seen = len(stack.emulator("binance-main").recorder.all())
    for account in ("binance-other", "binance-main", "binance-main", "binance-other"):
        paused = _get(stack, "bot", account, "/api/v3/account")
        assert paused.headers["x-proxy-error"] == "account_paused", paused.text
        assert 100 <= int(paused.headers["retry-after"]) <= 120
        assert "IP address" in proxy_error(paused)["message"]
    assert len(stack.emulator("binance-main").recorder.all()) == seen, "nothing reached the exchange"
    kraken = httpx.post(stack.proxy_url + "/x/kraken-main/0/private/Balance", content=b"", timeout=15,
                        headers={"Proxy-Authorization": f"Bearer {stack.token('bot')}",
                                 "Content-Type": "application/x-www-form-urlencoded"})
    assert kraken.status_code == 200, kraken.text  # other exchanges go on
    # an operator may end a cool-down early by clearing the flag; workers see it within 0.25 s
    asyncio.run(_clear_pause(stack, egress_scope("binance", stack.emulators["binance-main"][1].url) or ""))
    time.sleep(0.6)
    assert _get(stack, "bot", "binance-other", "/api/v3/account").status_code == 200
    assert _get(stack, "bot", "binance-main", "/api/v3/account").status_code == 200


async def _clear_pause(stack: Stack, account: str) -> None:
    store = open_store("sqlite", path=stack.dir / "state.db", url=None)
    try:
        await store.clear_flag(pause_flag(account))
    finally:
        await store.close()


def _away_from_minute_boundary() -> None:
    """Weight budgets count per minute (sliding window counter): start a short test well
    inside a minute so the previous minute's weighted count cannot shift it."""
    if time.time() % 60 > 45:
        time.sleep(60.5 - time.time() % 60)


def test_client_rate_limit_refuses_exactly_the_excess_across_workers(stack: Stack) -> None:
    # All at once, so both workers are busy accepting: sent one after another on a loaded
    # machine, one worker may win every accept and the test would not show the sharing.
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: _get(stack, "fast", "binance-other", "/api/v3/time"), range(12)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 5 and statuses.count(429) == 7, statuses
    limited = [r for r in responses if r.status_code == 429]
    assert all(proxy_error(r)["rule"] == "rate_limit.client" and int(r.headers["retry-after"]) >= 1
               for r in limited)
    assert len(_pids(stack, {r.headers["x-proxy-request-id"] for r in responses})) == 2
    # another client on the same account is unaffected
    assert _get(stack, "calm", "binance-other", "/api/v3/time").status_code == 200
    text = _metrics(stack)
    counts = [int(float(v)) for v in re.findall(
        r'proxy_rate_limited_total\{account="binance-other",rule="rate_limit.client"\} (\S+)', text)]
    assert sum(counts) == 7, counts


def test_nonce_rejection_is_counted(stack: Stack) -> None:
    stack.emulator("kraken-main").last_nonce[KRAKEN["api_key"]] = 10**19
    r = httpx.post(stack.proxy_url + "/x/kraken-main/0/private/Balance", content=b"", timeout=15,
                   headers={"Proxy-Authorization": f"Bearer {stack.token('bot')}",
                            "Content-Type": "application/x-www-form-urlencoded"})
    assert "EAPI:Invalid nonce" in r.text
    assert re.search(r'proxy_nonce_rejections_total\{account="kraken-main",exchange="kraken"\} 1',
                     _metrics(stack))
    stack.emulator("kraken-main").last_nonce[KRAKEN["api_key"]] = 0


WEIGHTED = """
version = 1
client = "bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
"""


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_account_weight_budget_follows_binance_weights(tmp_path: Path, backend: str) -> None:
    """weight_per_minute = 50: GET /api/v3/account weighs 20, so two pass and the third is
    refused before sending, on either worker; orders (weight 1) still fit."""
    with RedisServer() if backend == "redis" else _Nothing() as redis:
        state = f'backend = "redis"\nurl = "{redis.url}"' if redis is not None else None
        accounts = [AccountSpec("binance-main", "binance", MAIN, extra_toml="weight_per_minute = 50")]
        with start_stack(tmp_path, accounts, {"bot": WEIGHTED}, workers=2, state_toml=state) as s:
            emulator = s.emulator("binance-main")
            _away_from_minute_boundary()
            statuses = [_get(s, "bot", "binance-main", "/api/v3/account").status_code for _ in range(4)]
            assert statuses == [200, 200, 429, 429], statuses
            r = _get(s, "bot", "binance-main", "/api/v3/account")
            assert proxy_error(r)["rule"] == "rate_limit.account" and "retry-after" in r.headers
            assert len([x for x in emulator.recorder.all() if x.path == "/api/v3/account"]) == 2
            assert [_order(s, "bot", "binance-main").status_code for _ in range(10)] == [200] * 10
            assert _order(s, "bot", "binance-main").status_code == 429


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_policy_rate_limit_two_workers_by_backend(tmp_path: Path, backend: str) -> None:
    with RedisServer() if backend == "redis" else _Nothing() as redis:
        state = f'backend = "redis"\nurl = "{redis.url}"' if redis is not None else None
        accounts = [AccountSpec("binance-other", "binance", OTHER)]
        policies = {"fast": FAST.replace("5/hour", "10/hour"), "calm": CALM}
        with start_stack(tmp_path, accounts, policies, workers=2, state_toml=state) as s:
            statuses = [_get(s, "fast", "binance-other", "/api/v3/time").status_code for _ in range(25)]
            assert statuses.count(200) == 10 and statuses.count(429) == 15, statuses
            assert _get(s, "calm", "binance-other", "/api/v3/time").status_code == 200


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_state_store_outage_refuses_and_is_counted(tmp_path: Path) -> None:
    """Redis down: a rate-limited client is refused (fail closed, nothing sent) and
    /metrics counts the state-store errors; Redis back: service resumes."""
    with RedisServer() as redis:
        state = f'backend = "redis"\nurl = "{redis.url}"'
        with start_stack(tmp_path, [AccountSpec("binance-other", "binance", OTHER)], {"fast": FAST},
                         workers=1, state_toml=state) as s:
            assert _get(s, "fast", "binance-other", "/api/v3/time").status_code == 200
            seen = len(s.emulator("binance-other").recorder.all())
            redis.stop()
            try:
                r = _get(s, "fast", "binance-other", "/api/v3/time")
                assert r.status_code == 503 and r.headers["x-proxy-error"] == "not_ready", r.text
                assert len(s.emulator("binance-other").recorder.all()) == seen
                assert re.search(r'proxy_state_store_errors_total\{op="rate_limit"\} [1-9]',
                                 _metrics(s))
            finally:
                redis.restart()
            deadline = time.monotonic() + 15
            while _get(s, "fast", "binance-other", "/api/v3/time").status_code != 200:
                assert time.monotonic() < deadline, "did not recover after Redis came back"
                time.sleep(0.3)
