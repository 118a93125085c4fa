"""A ccxt bot pointed at a real ``serve`` gets, for every exchange and every refusal code, the
ccxt class its retry logic treats right, with the code and the rule in the exception's message
(docs/interface.md "Refusals"). ccxt 4.5.90 is the oracle: its own error handling reads the
proxy's answers.

One stack: per exchange an account with a strict emulator, and a second account whose secret
is deleted once the proxy is ready (``not_ready``). Clients: ``bot`` (caps), ``limited-bot``
(one request an hour per account), ``killed-bot`` (kill switch on). The upstream timeout is 1 s,
so an emulator holding its answer for 2 s is a timeout; a stopped emulator is unreachable.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ccxt
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.stack import AccountSpec, Stack, start_stack

PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption()).decode()


def _all_keys(bot: Any, base: str) -> None:
    bot.urls["api"] = {k: base for k in bot.urls["api"]}


@dataclass(frozen=True)
class Spec:
    exchange: str
    fields: dict[str, str]
    make: Callable[[str, dict[str, str]], Any]   # (account base URL, headers) -> ccxt exchange
    symbol: str
    side: str
    amount: float
    over: float                                  # an amount over the policy's cap
    price: float
    coid: Callable[[int], dict[str, Any]]        # n -> create_order params with a client order id
    place: tuple[str, str]                       # method, path ccxt's create_order uses
    withdraw: tuple[str, str]                    # method, path of a withdrawal
    cap: str = "0.5"
    extra: dict[str, Any] = field(default_factory=dict)


def _binance(base: str, headers: dict[str, str]) -> Any:
    return ccxt.binance({"apiKey": "placeholder", "secret": "placeholder", "headers": headers,
                         "urls": {"api": {"public": base + "/api/v3", "private": base + "/api/v3",
                                          "sapi": base + "/sapi/v1"}},
                         "options": {"fetchMarkets": {"types": ["spot"]}}})


def _bybit(base: str, headers: dict[str, str]) -> Any:
    bot = ccxt.bybit({"apiKey": "placeholder", "secret": "placeholder", "headers": headers,
                      "options": {"fetchMarkets": {"types": ["spot"]}}})
    _all_keys(bot, base)
    return bot


def _okx(base: str, headers: dict[str, str]) -> Any:
    return ccxt.okx({"apiKey": "placeholder", "secret": "placeholder", "password": "placeholder",
                     "headers": headers, "urls": {"api": {"rest": base}},
                     "options": {"fetchMarkets": {"types": ["spot"]}}})


def _bitget(base: str, headers: dict[str, str]) -> Any:
    bot = ccxt.bitget({"apiKey": "placeholder", "secret": "placeholder", "password": "placeholder",
                       "headers": headers})
    _all_keys(bot, base)
    return bot


def _bitstamp(base: str, headers: dict[str, str]) -> Any:
    return ccxt.bitstamp({"apiKey": "placeholder", "secret": "placeholder", "headers": headers,
                          "urls": {"api": {"public": base + "/api", "private": base + "/api"}}})


def _bitfinex(base: str, headers: dict[str, str]) -> Any:
    return ccxt.bitfinex({"apiKey": "placeholder", "secret": "placeholder", "headers": headers,
                          "enableRateLimit": False,
                          "urls": {"api": {"v1": base, "public": base, "private": base}}})


def _kraken(base: str, headers: dict[str, str]) -> Any:
    return ccxt.kraken({"apiKey": "placeholder", "secret": base64.b64encode(b"x" * 64).decode(),
                        "enableRateLimit": False, "headers": headers,
                        "urls": {"api": {"public": base, "private": base}}})


def _coinbase(base: str, headers: dict[str, str]) -> Any:
    return ccxt.coinbase({"apiKey": "placeholder", "secret": "placeholder", "headers": headers,
                          "urls": {"api": {"rest": base}}})


def _deribit(base: str, headers: dict[str, str]) -> Any:
    return ccxt.deribit({"apiKey": "placeholder", "secret": "placeholder", "headers": headers,
                         "urls": {"api": {"rest": base}}})


SPECS = {s.exchange: s for s in [
    Spec("binance", {"api_key": "binanceRefKey0123456789", "api_secret": "binance-ref-secret-0123456789"},
         _binance, "BTC/USDT", "buy", 0.01, 2, 30000, lambda n: {"newClientOrderId": f"ref-bn-{n}"},
         ("POST", "/api/v3/order"), ("POST", "/sapi/v1/capital/withdraw/apply")),
    Spec("bybit", {"api_key": "bybit_ref_key", "api_secret": "bybit-ref-secret-0123456789abcdef"},
         _bybit, "BTC/USDT", "buy", 0.01, 2, 30000, lambda n: {"clientOrderId": f"ref-by-{n}"},
         ("POST", "/v5/order/create"), ("POST", "/v5/asset/withdraw/create")),
    Spec("okx", {"api_key": "okx-ref-key", "api_secret": "OKXREFSECRET0123456789ABCDEF",
                 "passphrase": "RefPass1!"},
         _okx, "BTC/USDT", "buy", 0.01, 2, 30000, lambda n: {"clientOrderId": f"refokx{n}"},
         ("POST", "/api/v5/trade/batch-orders"), ("POST", "/api/v5/asset/withdrawal")),
    Spec("bitget", {"api_key": "bg_ref_key", "api_secret": "bg-ref-secret-0123456789abcdef",
                    "passphrase": "RefPass1"},
         _bitget, "BTC/USDT", "buy", 0.01, 2, 30000, lambda n: {"clientOrderId": f"ref-bg-{n}"},
         ("POST", "/api/v2/spot/trade/place-order"), ("POST", "/api/v2/spot/wallet/withdrawal")),
    Spec("bitstamp", {"api_key": "bitstampRefKey0123456789abcdef", "api_secret": "bitstamp-ref-secret-01"},
         _bitstamp, "BTC/USD", "buy", 0.01, 2, 30000, lambda n: {"client_order_id": f"ref-bs-{n}"},
         ("POST", "/api/v2/buy/btcusd/"), ("POST", "/api/v2/btc_withdrawal/")),
    Spec("bitfinex", {"api_key": "bitfinex-ref-key-0123", "api_secret": "bitfinex-ref-secret-0123456789"},
         _bitfinex, "BTC/USD", "sell", 0.01, 2, 60000, lambda n: {"clientOrderId": 7100 + n},
         ("POST", "/v2/auth/w/order/submit"), ("POST", "/v2/auth/w/withdraw")),
    Spec("kraken", {"api_key": "kraken-ref-key-0123",
                    "api_secret": base64.b64encode(b"kraken-ref-secret-" * 4).decode()},
         _kraken, "BTC/USD", "buy", 0.01, 2, 30000, lambda n: {"clientOrderId": f"refkr{n}"},
         ("POST", "/0/private/AddOrder"), ("POST", "/0/private/Withdraw")),
    Spec("coinbase", {"api_key": "organizations/org-ref/apiKeys/key-ref", "api_secret": PEM},
         _coinbase, "BTC/USD", "buy", 0.01, 2, 30000, lambda n: {"client_order_id": f"refcb{n}"},
         ("POST", "/api/v3/brokerage/orders"), ("POST", "/v2/accounts/abc/transactions")),
    Spec("deribit", {"api_key": "drbRefClient1", "api_secret": "deribit-ref-secret-0123456789"},
         _deribit, "BTC/USD:BTC", "buy", 100, 5000, 30000, lambda n: {"label": f"refdrb{n}"},
         ("GET", "/api/v2/private/buy"), ("GET", "/api/v2/private/withdraw"), cap="1000"),
]}


def _policy(client: str, suffixes: tuple[str, ...], extra: str = "") -> str:
    grants = "".join(
        f'\n[[grants]]\naccount = "{name}{suffix}"\nallow = ["read", "trade", "cancel"]\n'
        f'max_order_qty = "{spec.cap}"\n{extra}'
        for suffix in suffixes for name, spec in SPECS.items()
    )
    return f'version = 1\nclient = "{client}"\n{grants}'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [AccountSpec(f"{n}-main", n, s.fields) for n, s in SPECS.items()]
    accounts += [AccountSpec(f"{n}-gone", n, s.fields) for n, s in SPECS.items()]
    policies = {
        "bot": _policy("bot", ("-main", "-gone")),
        "limited-bot": _policy("limited-bot", ("-main",), 'rate_limit = "1/hour"\n'),
        "killed-bot": _policy("killed-bot", ("-main",)),
    }
    with start_stack(tmp_path_factory.mktemp("refusals"), accounts, policies, start_proxy=False) as s:
        s.edit_config("[server]\n", "[server]\nupstream_timeout_s = 1.0\n")
        s.start_proxy()
        s.wait_ready()
        assert s.cli("kill", "--client", "killed-bot").returncode == 0
        for name in SPECS:
            s.vault.client().secrets.kv.v2.delete_metadata_and_all_versions(
                path=f"exchanges/{name}-gone", mount_point="secret")
        _wait(lambda: _killed(s) and _all_gone(s), "kill switch and deleted secrets in force")
        yield s


def _wait(done: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)


def _killed(stack: Stack) -> bool:
    r = httpx.get(stack.proxy_url + "/x/binance-main/api/v3/account",
                  headers={"Proxy-Authorization": f"Bearer {stack.token('killed-bot')}"}, timeout=5)
    return bool(r.headers.get("x-proxy-error") == "account_paused")


def _all_gone(stack: Stack) -> bool:
    stopped = " ".join(stack.readyz()[1].get("accounts_stopped", []))
    return all(f"{name}-gone" in stopped for name in SPECS)


def _raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except ccxt.BaseError as exc:
        raised: BaseException = exc
        return raised
    raise AssertionError("no exception")


@pytest.mark.parametrize("exchange", list(SPECS))
def test_ccxt_bot_gets_the_class_for_every_refusal(stack: Stack, exchange: str) -> None:
    spec = SPECS[exchange]
    account = f"{exchange}-main"

    def bot(client: str = "bot", acct: str = account, token: str | None = None) -> Any:
        headers = {"Proxy-Authorization": f"Bearer {token or stack.token(client)}"}
        return spec.make(f"{stack.proxy_url}/x/{acct}", headers)

    def order(b: Any, n: int, amount: float | None = None) -> Callable[[], Any]:
        return lambda: b.create_order(spec.symbol, "limit", spec.side, amount or spec.amount, spec.price,
                                      spec.coid(n))

    def raw(b: Any, method: str, path: str, body: str | None = None, acct: str = account) -> Callable[[], Any]:
        content = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        return lambda: b.fetch(f"{stack.proxy_url}/x/{acct}{path}", method, content, body)

    trading = bot()
    trading.load_markets()
    limited = bot("limited-bot")
    results: dict[str, BaseException] = {
        "unauthenticated": _raised(order(bot(token="not-a-token"), 1)),
        "forbidden": _raised(order(bot(acct=f"no-such-{exchange}"), 2)),
        "endpoint_forbidden": _raised(raw(trading, *spec.withdraw)),
        "policy_denied": _raised(order(trading, 3, spec.over)),
        "bad_request": _raised(raw(trading, spec.place[0], spec.place[1] + ";x")),
        "too_large": _raised(raw(trading, "POST", spec.place[1], "a=" + "1" * 70_000)),
    }
    trading.create_order(spec.symbol, "limit", spec.side, spec.amount, spec.price, spec.coid(4))
    results["idempotency_conflict"] = _raised(order(trading, 4, spec.amount * 2))
    _raised(raw(limited, spec.place[0], spec.place[1] + ";x"))  # spends the hour's one request
    results["rate_limited"] = _raised(raw(limited, spec.place[0], spec.place[1] + ";x"))
    results["account_paused"] = _raised(order(bot("killed-bot"), 5))
    results["not_ready"] = _raised(order(bot(acct=f"{exchange}-gone"), 6))
    stack.faults[account].arm(*spec.place, when="before", hold_s=2.0)
    results["upstream_timeout"] = _raised(order(trading, 7))
    stack.emulators[account][1].stop()  # nothing listens there any more
    results["upstream_error"] = _raised(order(trading, 8))

    rules = {"policy_denied": "max_order_qty", "idempotency_conflict": "idempotency",
             "rate_limited": "rate_limit.grant", "account_paused": "kill_switch.client"}
    wrong = []
    for code, exc in results.items():
        want = NEAREST.get((exchange, code), EXPECTED[code])
        text = str(exc)
        if not isinstance(exc, want) or f"{code}: " not in text or f"(rule {rules.get(code, '')}" not in text:
            wrong.append(f"{code}: want {want.__name__}, got {type(exc).__name__}: {text[:300]}")
    assert not wrong, "\n".join(wrong)


EXPECTED: dict[str, type[Exception]] = {
    "unauthenticated": ccxt.AuthenticationError, "forbidden": ccxt.PermissionDenied,
    "endpoint_forbidden": ccxt.PermissionDenied, "policy_denied": ccxt.PermissionDenied,
    "bad_request": ccxt.BadRequest, "too_large": ccxt.BadRequest,
    "idempotency_conflict": ccxt.InvalidOrder, "rate_limited": ccxt.RateLimitExceeded,
    "account_paused": ccxt.ExchangeNotAvailable, "not_ready": ccxt.ExchangeNotAvailable,
    "upstream_error": ccxt.ExchangeNotAvailable, "upstream_timeout": ccxt.RequestTimeout,
}
NEAREST: dict[tuple[str, str], type[Exception]] = {
    ("binance", "rate_limited"): ccxt.DDoSProtection,
    ("bitfinex", "idempotency_conflict"): ccxt.BadRequest,
    ("coinbase", "idempotency_conflict"): ccxt.BadRequest,
}
