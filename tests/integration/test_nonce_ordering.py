"""Strictly increasing nonces through real proxy processes: many bots, several workers, and two
proxies sharing Redis, on one Kraken key and on one Bitfinex key, with zero nonce rejections at
the strict emulator; and a Kraken key pool whose keys each keep their own increasing sequence.

Every bot reads and places orders with client order ids on the same key: reads take their nonce
one step at a time, orders in the worker's group commit with their claim (proxy.state.batches),
so both ways interleave on one key across workers and hosts. Each order's decision record names
the nonce the exchange saw."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from proxy.audit.reader import iter_records
from proxy_devkit.emulator.recorder import Received
from proxy_devkit.emulator.server import free_port
from tests.support.redis_server import RedisServer
from tests.support.stack import REPO, AccountSpec, Stack, start_stack

FIELDS = {"api_key": "kraken-nonce-key-01", "api_secret": base64.b64encode(b"nonce-secret-" * 5).decode()}
POLICY = """
version = 1
client = "bot"

[[grants]]
account = "kraken-main"
allow = ["read", "trade"]
"""
BOTS, CALLS = 50, 3


@dataclass(frozen=True)
class Case:
    """One nonce exchange: its account, a signed read, and where its nonce travels."""

    account: str
    exchange: str
    fields: dict[str, str]
    path: str
    content_type: str
    body: bytes
    nonce: Callable[[Received], int]
    #: an order with client order id N: (path, content type, body), and the id the exchange saw
    order: Callable[[int], tuple[str, str, bytes]]
    order_id: Callable[[Received], str]


FORM = "application/x-www-form-urlencoded"
KRAKEN = Case("kraken-main", "kraken", FIELDS, "/0/private/Balance", FORM, b"",
              lambda r: int(dict(parse_qsl(r.body.decode()))["nonce"]),
              lambda n: ("/0/private/AddOrder", FORM,
                         f"pair=XBTUSD&type=buy&ordertype=limit&volume=0.001&price=1000&cl_ord_id=o{n}".encode()),
              lambda r: dict(parse_qsl(r.body.decode()))["cl_ord_id"])
BITFINEX = Case("bitfinex-main", "bitfinex",
                {"api_key": "bitfinex-nonce-key-01", "api_secret": "bitfinex-nonce-secret-0123456789"},
                "/v2/auth/r/wallets", "application/json", b"{}",
                lambda r: int(r.header("bfx-nonce") or "0"),
                lambda n: ("/v2/auth/w/order/submit", "application/json", json.dumps({
                    "type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "0.001", "price": "1000",
                    "cid": 7_000_000 + n}).encode()),
                lambda r: str(json.loads(r.body)["cid"]))
CASES = [KRAKEN, BITFINEX]


def _spec(case: Case) -> AccountSpec:
    return AccountSpec(case.account, case.exchange, case.fields)


def _policy(case: Case) -> dict[str, str]:
    return {"bot": POLICY.replace("kraken-main", case.account)}


async def _storm(urls: list[str], token: str, case: Case = KRAKEN) -> list[int]:
    async with httpx.AsyncClient(timeout=60) as client:
        async def bot(i: int) -> list[int]:
            statuses = []
            for k in range(CALLS):  # a read, an order, a read
                path, content_type, body = case.path, case.content_type, case.body
                if k % 2:
                    path, content_type, body = case.order(i * CALLS + k)
                r = await client.post(urls[i % len(urls)] + f"/x/{case.account}{path}",
                                      headers={"Proxy-Authorization": f"Bearer {token}",
                                               "Content-Type": content_type},
                                      content=body)
                statuses.append(r.status_code)
            return statuses
        results = await asyncio.gather(*(bot(i) for i in range(BOTS)))
    return [s for statuses in results for s in statuses]


def _assert_ordered(stack: Stack, case: Case = KRAKEN, audit: tuple[str, ...] = ("audit",)) -> None:
    order_path = case.order(0)[0]
    received = [r for r in stack.emulator(case.account).recorder.all() if r.path in (case.path, order_path)]
    assert len(received) >= BOTS * CALLS
    assert all(r.accepted for r in received), [r.error for r in received if not r.accepted][:3]
    nonces = [case.nonce(r) for r in received]
    assert all(b > a for a, b in itertools.pairwise(nonces)), "nonces must strictly increase"
    orders = {case.order_id(r): case.nonce(r) for r in received if r.path == order_path}
    assert len(orders) == BOTS * (CALLS // 2), "every order placed once"
    stack.stop_proxy()  # flush the audit trail
    recorded = {str(r["client_order_id"]): r["nonce"] for d in audit for r in iter_records(stack.dir / d)
                if r.get("phase") == "decision" and r.get("decision") == "allow" and r["path"] == order_path}
    assert recorded == orders, "each order's decision record names the nonce the exchange saw"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.exchange)
def test_nonce_ordering_four_workers_sqlite(tmp_path: Path, case: Case) -> None:
    with start_stack(tmp_path, [_spec(case)], _policy(case), workers=4) as stack:
        statuses = asyncio.run(_storm([stack.proxy_url], stack.token("bot"), case))
        assert statuses == [200] * (BOTS * CALLS)
        _assert_ordered(stack, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.exchange)
def test_nonce_ordering_two_proxies_sharing_redis(tmp_path: Path, case: Case) -> None:
    with RedisServer() as redis:
        state = f'backend = "redis"\nurl = "{redis.url}"'
        accounts = [_spec(case)]
        with start_stack(tmp_path, accounts, _policy(case), workers=2, state_toml=state) as stack:
            # A second proxy "host": same Vault, Redis and emulator, its own ports and audit dir.
            second_listen, second_admin = free_port(), free_port()
            text = stack.config_path.read_text()
            text = text.replace(stack.proxy_url.rsplit(":", 1)[1], str(second_listen), 1)
            text = text.replace(stack.admin_url.rsplit(":", 1)[1], str(second_admin), 1)
            text = text.replace('dir = "audit"', 'dir = "audit-second"')
            second = stack.dir / "second.toml"
            second.write_text(text)
            second.chmod(0o600)
            cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(second), "--workers", "2"]
            if os.geteuid() == 0:
                cmd.append("--unsafe-allow-root")
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            log = (stack.dir / "second.log").open("wb")
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            stack.procs.append(proc)
            second_url = f"http://127.0.0.1:{second_listen}"
            for _ in range(300):
                try:
                    if httpx.get(f"http://127.0.0.1:{second_admin}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                asyncio.run(asyncio.sleep(0.05))
            else:
                pytest.fail("second proxy not ready: " + (stack.dir / "second.log").read_text()[-2000:])
            statuses = asyncio.run(_storm([stack.proxy_url, second_url], stack.token("bot"), case))
            assert statuses == [200] * (BOTS * CALLS)
            _assert_ordered(stack, case, ("audit", "audit-second"))


def test_nonce_ordering_redis_down_refuses_then_recovers(tmp_path: Path) -> None:
    with RedisServer() as redis:
        state = f'backend = "redis"\nurl = "{redis.url}"'
        with start_stack(tmp_path, [AccountSpec("kraken-main", "kraken", FIELDS)], {"bot": POLICY},
                         state_toml=state) as stack:
            headers = {"Proxy-Authorization": f"Bearer {stack.token('bot')}"}
            url = stack.proxy_url + "/x/kraken-main/0/private/Balance"
            assert httpx.post(url, headers=headers, timeout=30).status_code == 200
            before = len(stack.emulator("kraken-main").recorder.all())
            redis.stop()
            down = httpx.post(url, headers=headers, timeout=30)
            assert down.status_code == 503 and down.headers["x-proxy-error"] == "not_ready"
            assert len(stack.emulator("kraken-main").recorder.all()) == before, "nothing sent while Redis is down"
            redis.start()
            for _ in range(100):
                if httpx.post(url, headers=headers, timeout=30).status_code == 200:
                    break
                asyncio.run(asyncio.sleep(0.1))
            else:
                pytest.fail("service did not resume after Redis returned")


FIELDS_B = {"api_key": "kraken-nonce-key-02", "api_secret": base64.b64encode(b"second-secret-" * 5).decode()}


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_nonce_ordering_key_pool_uses_every_key_in_order(tmp_path: Path, backend: str) -> None:
    with contextlib.ExitStack() as resources:
        state = None
        if backend == "redis":
            redis = resources.enter_context(RedisServer())
            state = f'backend = "redis"\nurl = "{redis.url}"'
        stack = resources.enter_context(start_stack(
            tmp_path, [AccountSpec("kraken-main", "kraken", FIELDS)], {"bot": POLICY},
            state_toml=state, start_proxy=False,
        ))
        # A second key of the same account: known to the exchange, in Vault, listed in the pool.
        stack.emulator("kraken-main").secrets[FIELDS_B["api_key"]] = base64.b64decode(FIELDS_B["api_secret"])
        stack.vault.client().secrets.kv.v2.create_or_update_secret(
            path="exchanges/kraken-b", secret=FIELDS_B, mount_point="secret")
        text = stack.config_path.read_text()
        single = 'secret = "exchanges/kraken-main"'
        assert single in text
        stack.config_path.write_text(
            text.replace(single, 'secrets = ["exchanges/kraken-main", "exchanges/kraken-b"]'))
        stack.start_proxy(workers=4 if backend == "sqlite" else 2)
        stack.wait_ready()

        statuses = asyncio.run(_storm([stack.proxy_url], stack.token("bot")))
        assert statuses == [200] * (BOTS * CALLS)
        order_path = KRAKEN.order(0)[0]
        received = [r for r in stack.emulator("kraken-main").recorder.all()
                    if r.path in (KRAKEN.path, order_path)]
        assert len(received) == BOTS * CALLS
        assert all(r.accepted for r in received), [r.error for r in received if not r.accepted][:3]
        by_key: dict[str, list[int]] = {}
        for r in received:
            by_key.setdefault(r.header("API-Key") or "", []).append(KRAKEN.nonce(r))
        assert set(by_key) == {FIELDS["api_key"], FIELDS_B["api_key"]}, "both keys of the pool are used"
        for key, nonces in by_key.items():
            assert all(b > a for a, b in itertools.pairwise(nonces)), f"nonces of {key} must increase"
        stack.stop_proxy()  # flush the audit trail
        decisions = [r for r in iter_records(stack.dir / "audit")
                     if r.get("phase") == "decision" and r.get("decision") == "allow"]
        assert len(decisions) == BOTS * CALLS
        assert {r["key_index"] for r in decisions} == {0, 1}, "the audit names the pool key used"
        keys = [FIELDS["api_key"], FIELDS_B["api_key"]]
        placed = {KRAKEN.order_id(r): (r.header("API-Key"), KRAKEN.nonce(r)) for r in received
                  if r.path == order_path}
        assert {r["client_order_id"]: (keys[r["key_index"]], r["nonce"]) for r in decisions
                if r["path"] == order_path} == placed, "each order's record names its key and nonce"
