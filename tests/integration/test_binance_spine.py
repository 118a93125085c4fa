"""The spine end to end: a real OpenBao, the strict Binance emulator, a real proxy process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import ccxt
import httpx
import pytest

from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

CANARY = "CANARYSECRETcanary0123456789abcdefCANARYSECRETcanary0123456789ab"
API_KEY = "binanceKey0123456789"
POLICY = """
version = 1
client = "momentum-bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT", "ETHUSDT"]
max_order_qty = "0.5"
max_order_notional = "25000"
"""
OTHER_POLICY = """
version = 1
client = "other-bot"

[[grants]]
account = "binance-spare"
allow = ["read"]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [
        AccountSpec("binance-main", "binance", {"api_key": API_KEY, "api_secret": CANARY}),
        AccountSpec("binance-spare", "binance", {"api_key": "spareKey0123456789", "api_secret": "s" * 64}),
    ]
    with start_stack(tmp_path_factory.mktemp("spine"), accounts,
                     {"momentum-bot": POLICY, "other-bot": OTHER_POLICY}) as s:
        yield s


def call(stack: Stack, method: str, path: str, token: str | None, **kw: object) -> httpx.Response:
    headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
    if token is not None:
        headers["Proxy-Authorization"] = f"Bearer {token}"
    return httpx.request(method, stack.proxy_url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def order_body(**over: str) -> dict[str, str]:
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": "0.01", "price": "50000"}
    params.update(over)
    return params


def test_spine_balance_read(stack: Stack) -> None:
    r = call(stack, "GET", "/x/binance-main/api/v3/account", stack.token("momentum-bot"))
    assert r.status_code == 200, r.text
    assert {b["asset"] for b in r.json()["balances"]} >= {"BTC", "USDT"}
    assert len(r.headers["x-proxy-request-id"]) == 32


def test_spine_limit_order_placed_queried_cancelled(stack: Stack) -> None:
    token = stack.token("momentum-bot")
    r = call(stack, "POST", "/x/binance-main/api/v3/order", token,
             data=order_body(newClientOrderId="spine-order-1"))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "NEW" and r.json()["clientOrderId"] == "spine-order-1"
    q = call(stack, "GET", "/x/binance-main/api/v3/order", token,
             params={"symbol": "BTCUSDT", "origClientOrderId": "spine-order-1"})
    assert q.status_code == 200 and q.json()["orderId"] == r.json()["orderId"]
    c = call(stack, "DELETE", "/x/binance-main/api/v3/order", token,
             params={"symbol": "BTCUSDT", "origClientOrderId": "spine-order-1"})
    assert c.status_code == 200 and c.json()["status"] == "CANCELED"


def test_spine_withdraw_is_endpoint_forbidden_and_never_sent(stack: Stack) -> None:
    before = len(stack.emulator("binance-main").recorder.all())
    r = call(stack, "POST", "/x/binance-main/sapi/v1/capital/withdraw/apply", stack.token("momentum-bot"),
             data={"coin": "BTC", "address": "bc1qattacker", "amount": "1"})
    assert r.status_code == 403
    assert r.headers["x-proxy-error"] == "endpoint_forbidden"
    assert proxy_error(r)["code"] == "endpoint_forbidden"
    for path in ("/sapi/v1/asset/transfer", "/sapi/v1/sub-account/transfer/subToSub", "/api/v3/nothing"):
        assert call(stack, "POST", f"/x/binance-main{path}", stack.token("momentum-bot")).status_code == 403
    received = stack.emulator("binance-main").recorder.all()[before:]
    assert not any("withdraw" in r.path or "transfer" in r.path or "nothing" in r.path for r in received)


@pytest.mark.parametrize(
    ("over", "rule"),
    [({"symbol": "SOLUSDT", "price": "150"}, "symbols"), ({"quantity": "0.6"}, "max_order_qty"),
     ({"quantity": "0.5", "price": "60000"}, "max_order_notional")],
)
def test_spine_policy_denials_name_the_rule(stack: Stack, over: dict[str, str], rule: str) -> None:
    before = len(stack.emulator("binance-main").recorder.all())
    r = call(stack, "POST", "/x/binance-main/api/v3/order", stack.token("momentum-bot"), data=order_body(**over))
    assert r.status_code == 403 and proxy_error(r)["code"] == "policy_denied"
    assert proxy_error(r)["rule"] == rule
    assert len(stack.emulator("binance-main").recorder.all()) == before


def _forge(claims: dict[str, object], alg: str, key: bytes = b"k" * 32) -> str:
    """An HS256 token signed by hand, so that even a PEM public key can be the HMAC key
    (the algorithm-confusion attack that pyjwt itself refuses to produce)."""
    assert alg == "HS256"
    signing_input = (_b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "."
                     + _b64(json.dumps(claims).encode()))
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_spine_bad_tokens_all_get_the_same_401(stack: Stack) -> None:
    now = int(time.time())
    good = stack.token("momentum-bot")
    claims = {"sub": "momentum-bot", "iss": "signing-proxy", "aud": "signing-proxy", "iat": now,
              "exp": now + 600, "jti": "x"}
    public_pem = stack.vault.client().secrets.kv.v2.read_secret_version(
        path="proxy/token-verify", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]["public_key"]
    head, body, _sig = good.split(".")
    none_token = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + body + "."
    cases = {
        "missing": None,
        "malformed": "not-a-token",
        "expired": stack.token("momentum-bot", ttl_s=1, now=now - 100),
        "alg_none": none_token,
        "hs256_confusion": _forge(claims, "HS256", public_pem.encode()),
        "wrong_audience": _forge({**claims, "aud": "elsewhere"}, "HS256"),
        "tampered_sub": head + "." + _b64(json.dumps({**claims, "sub": "other-bot"}).encode()) + "." + _sig,
        "unknown_client": stack.token("nobody"),
    }
    bodies = set()
    for name, token in cases.items():
        r = call(stack, "GET", "/x/binance-main/api/v3/account", token)
        if name == "unknown_client":
            # a validly signed token for a client with no policy is authenticated but granted nothing
            assert r.status_code == 403, name
            continue
        assert r.status_code == 401, (name, r.text)
        assert r.headers["x-proxy-error"] == "unauthenticated"
        err = proxy_error(r)
        bodies.add((err["code"], err["message"]))
    assert len(bodies) == 1


def test_spine_unknown_and_ungranted_accounts_look_the_same(stack: Stack) -> None:
    token = stack.token("momentum-bot")
    a = call(stack, "GET", "/x/binance-spare/api/v3/account", token)
    b = call(stack, "GET", "/x/no-such-account/api/v3/account", token)
    c = call(stack, "POST", "/x/binance-spare/api/v3/order//../x", token, data={"a": "1"})
    for r in (a, b, c):
        assert r.status_code == 403 and r.headers["x-proxy-error"] == "forbidden"
    assert {proxy_error(r)["message"] for r in (a, b, c)} == {proxy_error(a)["message"]}
    # the same bytes, but for the request id: the format follows the path, not the account
    assert len({r.text.replace(r.headers["x-proxy-request-id"], "") for r in (a, b, c)}) == 1


def test_spine_revoked_client_is_refused(stack: Stack) -> None:
    token = stack.token("other-bot", now=int(time.time()) - 5)
    assert call(stack, "GET", "/x/binance-spare/api/v3/account", token).status_code == 200
    assert stack.cli("token", "revoke", "--client", "other-bot").returncode == 0
    deadline = time.monotonic() + 10
    while call(stack, "GET", "/x/binance-spare/api/v3/account", token).status_code != 401:
        assert time.monotonic() < deadline, "revocation not in force within 10 s"
        time.sleep(0.2)


def test_spine_oversized_body_is_too_large(stack: Stack) -> None:
    r = call(stack, "POST", "/x/binance-main/api/v3/order", stack.token("momentum-bot"),
             content=b"a=" + b"1" * 70_000, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and r.headers["x-proxy-error"] == "too_large"


def test_spine_ccxt_bot_with_placeholder_keys(stack: Stack) -> None:
    token = stack.token("momentum-bot")
    base = stack.proxy_url + "/x/binance-main"
    bot = ccxt.binance({
        "apiKey": "placeholder", "secret": "placeholder",
        "urls": {"api": {"public": base + "/api/v3", "private": base + "/api/v3",
                         "sapi": base + "/sapi/v1"}},
        "headers": {"Proxy-Authorization": f"Bearer {token}"},
        "options": {"fetchMarkets": {"types": ["spot"]}},
    })
    balance = bot.fetch_balance()
    assert balance["total"]["BTC"] > 0
    order = bot.create_order("BTC/USDT", "limit", "buy", 0.01, 40000,
                             {"newClientOrderId": "ccxt-bot-1"})
    assert order["clientOrderId"] == "ccxt-bot-1"
    fetched = bot.fetch_order(order["id"], "BTC/USDT")
    assert fetched["status"] == "open"
    assert any(o["id"] == order["id"] for o in bot.fetch_open_orders("BTC/USDT"))
    cancelled = bot.cancel_order(order["id"], "BTC/USDT")
    assert cancelled["status"] == "canceled"
    with pytest.raises(ccxt.BaseError):
        bot.withdraw("BTC", 0.1, "bc1qattacker")


def test_spine_canary_secret_never_leaks(stack: Stack) -> None:
    token = stack.token("momentum-bot")
    bodies = [call(stack, "POST", "/x/binance-main/api/v3/order", token, data=order_body(quantity="9")).text,
              call(stack, "GET", "/x/binance-main/api/v3/account", "bad").text,
              call(stack, "GET", "/x/binance-main/api/v3/%2e%2e/order", token).text]
    audit = "".join(p.read_text() for p in Path(stack.dir / "audit").rglob("*") if p.is_file())
    for text in [*bodies, stack.proxy_log(), audit]:
        assert CANARY not in text
        assert token not in text


def test_spine_audit_query_lists_decisions(stack: Stack) -> None:
    call(stack, "GET", "/x/binance-main/api/v3/account", stack.token("momentum-bot"))
    out = stack.cli("audit", "query", "--client", "momentum-bot")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert records and all(r["client"] == "momentum-bot" for r in records)
    assert {"allow", "deny"} <= {r["decision"] for r in records}
    for r in records:
        for key in ("ts", "request_id", "account", "exchange", "method", "path", "category",
                    "decision", "rule", "upstream_status", "key_version"):
            assert key in r
    verify = stack.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
