"""Reading a key's permissions from each exchange's documented answer."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from proxy import exchanges
from proxy.errors import AccountPaused, NotReady
from proxy.exchanges.base import Credentials
from proxy.exchanges.capabilities import Permissions
from proxy.guards.hooks import ExchangeSafety
from proxy.guards.key_vetting import KeyVetting, parse_answer
from proxy.keys.pool import KeyPool
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey
from proxy.ops.metrics import Metrics
from proxy.pipeline.accounts import Account
from proxy.upstream import UpstreamResponse


def _b(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(("exchange", "answer", "expected"), [
    ("binance", {"ipRestrict": False, "enableWithdrawals": True, "enableReading": True}, Permissions(True, False)),
    ("binance", {"ipRestrict": True, "enableWithdrawals": False}, Permissions(False, True)),
    ("bybit", {"retCode": 0, "result": {"readOnly": 0, "ips": ["*"],
                                        "permissions": {"Spot": ["SpotTrade"], "Wallet": ["AccountTransfer", "Withdraw"]}}},
     Permissions(True, False)),
    ("bybit", {"retCode": 0, "result": {"ips": ["10.0.0.1"], "permissions": {"Spot": ["SpotTrade"], "Wallet": []}}},
     Permissions(False, True)),
    ("okx", {"code": "0", "data": [{"perm": "read_only,withdraw,trade"}]}, Permissions(True)),
    ("okx", {"code": "0", "data": [{"perm": "read_only,trade"}]}, Permissions(False)),
    ("coinbase", {"can_view": True, "can_trade": True, "can_transfer": True}, Permissions(True)),
    ("coinbase", {"can_view": True, "can_trade": True, "can_transfer": False}, Permissions(False)),
])
def test_parse_answer(exchange: str, answer: object, expected: Permissions) -> None:
    assert parse_answer(exchange, 200, _b(answer)) == expected


@pytest.mark.parametrize(("exchange", "status", "body"), [
    ("binance", 200, b"{}"),
    ("binance", 200, _b({"enableWithdrawals": "false"})),  # not a boolean: never guess
    ("binance", 401, _b({"code": -2015, "msg": "Invalid API-key"})),
    ("okx", 200, _b({"code": "50113", "msg": "Invalid Sign", "data": []})),
    ("bybit", 200, _b({"retCode": 10003, "retMsg": "API key is invalid."})),
    ("coinbase", 200, b"not json"),
])
def test_unreadable_answers_are_errors(exchange: str, status: int, body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_answer(exchange, status, body)


# ---------------------------------------------------------------- vetting keys, pool keys

class _Cfg:
    base_url = "https://api.binance.com"
    unsafe_allow_withdraw_capable_key = False

    def __init__(self, name: str) -> None:
        self.name = name


class _Answers:
    """A stand-in exchange: answers the permission query per API key (X-MBX-APIKEY)."""

    def __init__(self, can_withdraw: dict[str, bool]) -> None:
        self.can_withdraw = can_withdraw
        self.asked: list[str] = []

    async def send(self, base_url: str, out: Any) -> UpstreamResponse:
        api_key = dict(out.headers)["X-MBX-APIKEY"]
        self.asked.append(api_key)
        body = {"ipRestrict": True, "enableWithdrawals": self.can_withdraw[api_key]}
        return UpstreamResponse(200, (), _b(body), 1.0)


def _creds(api_key: str, version: int = 1) -> Credentials:
    return Credentials(api_key=api_key, key=HmacKey(Secret("s" * 64)), version=version)


def _account(name: str, exchange: str, creds: Credentials | None, pool: KeyPool | None = None) -> Account:
    cfg: Any = _Cfg(name)
    return Account(cfg=cfg, exchange=exchanges.get(exchange), host="api.binance.com", creds=creds, pool=pool)


def _pool_account(*keys: str) -> Account:
    pool = KeyPool(tuple(f"exchanges/{k}" for k in keys))
    for i, k in enumerate(keys):
        pool.set(i, _creds(k))
    return _account("pool", "binance", pool.creds[0], pool)


def test_every_key_of_a_pool_is_vetted_and_a_withdraw_capable_one_never_leased() -> None:
    answers = _Answers({"keyAAAAAAAA": False, "keyBBBBBBBB": True})
    vetting = KeyVetting(answers)
    account = _pool_account("keyAAAAAAAA", "keyBBBBBBBB")
    asyncio.run(vetting.vet_all([account]))
    assert sorted(answers.asked) == ["keyAAAAAAAA", "keyBBBBBBBB"]
    assert vetting.refusal("pool", 1) is None  # the account serves: one of its keys may sign
    assert vetting.refusal("pool", 1, "exchanges/keyAAAAAAAA") is None
    refused = vetting.refusal("pool", 1, "exchanges/keyBBBBBBBB")
    assert refused is not None and "can withdraw" in refused.message
    assert list(vetting.refused()) == ["pool key exchanges/keyBBBBBBBB"]
    pool = account.pool
    assert pool is not None
    for _ in range(4):
        with pool.lease(lambda path, c: vetting.refusal("pool", c.version, path)) as (index, leased):
            assert (index, leased.api_key) == (0, "keyAAAAAAAA")


def test_a_pool_whose_keys_are_all_refused_is_refused() -> None:
    vetting = KeyVetting(_Answers({"keyAAAAAAAA": True, "keyBBBBBBBB": True}))
    account = _pool_account("keyAAAAAAAA", "keyBBBBBBBB")
    asyncio.run(vetting.vet_all([account]))
    refused = vetting.refusal("pool", 1)
    assert refused is not None and refused.rule == "key_permissions"
    pool = account.pool
    assert pool is not None
    with pytest.raises(NotReady, match="can withdraw"), \
            pool.lease(lambda path, c: vetting.refusal("pool", c.version, path)):
        pass


def test_an_unchecked_pool_key_is_not_leased() -> None:
    vetting = KeyVetting(_Answers({"keyAAAAAAAA": False}))
    account = _pool_account("keyAAAAAAAA")
    asyncio.run(vetting.vet_all([account]))
    pool = KeyPool(("exchanges/keyAAAAAAAA", "exchanges/keyBBBBBBBB"))
    pool.set(0, _creds("keyAAAAAAAA"))
    pool.set(1, _creds("keyBBBBBBBB"))  # loaded after the round: no verdict yet
    for _ in range(3):
        with pool.lease(lambda path, c: vetting.refusal("pool", c.version, path)) as (index, _):
            assert index == 0


def test_a_rotated_key_on_an_exchange_that_cannot_be_checked_keeps_serving() -> None:
    """Kraken cannot be asked: version 1 is used unchecked, and so is version 2 at once, before
    the next round (no 503 "not checked yet" between the swap and the round)."""
    vetting = KeyVetting(_Answers({}))
    account = _account("kraken-main", "kraken", _creds("k", 1))
    asyncio.run(vetting.vet_all([account]))
    assert vetting.refusal("kraken-main", 1) is None
    assert vetting.refusal("kraken-main", 2) is None


class _RemoteKey(HmacKey):
    remote = True


def test_a_transit_key_is_signed_off_the_event_loop() -> None:
    """A Transit signer does blocking HTTP: the check must not sign in the event loop."""
    loop_thread: list[int] = []
    signed_in: list[int] = []
    answers = _Answers({"keyAAAAAAAA": False})
    account = _account("main", "binance", Credentials("keyAAAAAAAA", _RemoteKey(Secret("s" * 64)), version=1))
    real_sign = account.exchange.sign

    def sign(*args: Any) -> Any:
        signed_in.append(threading.get_ident())
        return real_sign(*args)

    account.exchange = _Signing(account.exchange, sign)

    async def run() -> None:
        loop_thread.append(threading.get_ident())
        await KeyVetting(answers).vet_all([account])

    asyncio.run(run())
    assert answers.asked == ["keyAAAAAAAA"]
    assert signed_in and signed_in[0] != loop_thread[0]


class _Signing:
    """An exchange module whose ``sign`` is replaced (to see which thread signs)."""

    def __init__(self, inner: Any, sign: Any) -> None:
        self._inner = inner
        self.sign = sign

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _RateLimited(_Answers):
    async def send(self, base_url: str, out: Any) -> UpstreamResponse:
        self.asked.append(dict(out.headers)["X-MBX-APIKEY"])
        return UpstreamResponse(429, (("Retry-After", "30"),), b'{"code":-1003}', 1.0)


def test_key_checks_pause_on_429_and_send_nothing_while_paused() -> None:
    answers = _RateLimited({})
    vetting = KeyVetting(answers)
    safety = ExchangeSafety(store=None, metrics=Metrics(), clock=lambda: 1000.0)
    vetting.guard = safety
    account = _account("main", "binance", _creds("keyAAAAAAAA"))

    async def run() -> None:
        await vetting.vet_all([account])  # the check meets a 429: refused, and the account pauses
        refusal = vetting.refusal("main", 1)
        assert refusal is not None and "could not check" in refusal.message
        with pytest.raises(AccountPaused):
            await safety.check_pause("main")
        vetting._verdicts[("main", "")].retry_at = 0.0  # its retry is due, the pause is not over
        await vetting.vet_all([account])

    asyncio.run(run())
    assert answers.asked == ["keyAAAAAAAA"], "nothing more was sent while paused"
