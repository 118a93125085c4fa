"""Private streams through the proxy, per exchange: a ccxt pro bot with placeholder keys watches
its orders while it trades over REST through the proxy; its own login never reaches the
exchange; acting or non-private messages are refused in the exchange's own format and never
reach it; the upgrade is refused with the contract's codes; no secret reaches the bot."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import ccxt.pro
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.audit.reader import iter_records
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    exchange: str
    fields: dict[str, str]
    path: str
    ccxt_options: dict[str, Any]
    point_urls: Callable[[Any, str, str], None]
    #: the bot's own login (placeholder keys; None: the exchange has no login message), an acting
    #: message, a public channel, a private one
    bot_login: str | None
    acting: str
    public: str
    #: a private-channel subscription (None: the exchange needs none, Bitfinex)
    private: str | None
    ping: str
    pong: Callable[[str], bool]
    accepted: Callable[[Any], bool]
    refused: Callable[[Any], bool]
    symbol: str = "BTC/USDT"
    coid: str | int = "streamorder1"
    amount: float = 0.01
    #: the order parameter carrying the client order id
    coid_param: str = "clientOrderId"
    #: the key naming a message's operation ("event" on Bitfinex)
    op_key: str = "op"
    #: what the exchange receives from the proxy in the login test, by operation, pings left out
    expected_ops: tuple[str, ...] = ()
    #: ccxt 4.5.90 shows no client order id on these streams (Bitfinex: it reads the GID field;
    #: Deribit: it ignores the label; Kraken: it reads order_userref, not cl_ord_id)
    ccxt_reads_coid: bool = True
    #: ccxt 4.5.90 derives an open order's status from this stream (Bitstamp: it knows only
    #: closed and canceled, so an order_created parses with no status)
    ccxt_reads_status: bool = True
    #: the bot's placeholder secret, in the form ccxt wants (Kraken: base64)
    bot_secret: str = "placeholder"
    #: the REST request for the proxy's own stream token (None: the stream takes none)
    token_path: str | None = None


def _bybit_urls(bot: Any, rest: str, ws: str) -> None:
    bot.urls["api"] = {**{k: rest for k in bot.urls["api"] if k != "ws"}, "ws": bot.urls["api"]["ws"]}
    bot.urls["api"]["ws"]["private"].update({"spot": {"unified": ws, "nonUnified": ws}, "contract": ws})


def _okx_urls(bot: Any, rest: str, ws: str) -> None:
    bot.urls["api"] = {"rest": rest, "ws": ws.removesuffix("/private")}


def _bitfinex_urls(bot: Any, rest: str, ws: str) -> None:
    bot.urls["api"] = {"v1": rest, "public": rest, "private": rest,
                       "ws": {"public": bot.urls["api"]["ws"]["public"], "private": ws}}


def _deribit_urls(bot: Any, rest: str, ws: str) -> None:
    bot.urls["api"] = {"rest": rest, "ws": ws}


def _coinbase_urls(bot: Any, rest: str, ws: str) -> None:
    bot.urls["api"] = {"rest": rest, "ws": ws}


def _bitget_urls(bot: Any, rest: str, ws: str) -> None:
    bot.urls["api"] = {**{k: rest for k in bot.urls["api"] if k != "ws"}, "ws": bot.urls["api"]["ws"]}
    bot.urls["api"]["ws"]["private"] = ws


def _kraken_urls(bot: Any, rest: str, ws: str) -> None:
    bot.urls["api"] = {"public": rest, "private": rest,
                       "ws": {**bot.urls["api"]["ws"], "private": ws, "privateV2": ws}}


def _bitstamp_urls(bot: Any, rest: str, ws: str) -> None:
    bot.urls["api"] = {"public": rest + "/api", "private": rest + "/api", "ws": ws}


def _binance_urls(bot: Any, rest: str, ws: str) -> None:
    bot.urls["api"] = {"public": rest + "/api/v3", "private": rest + "/api/v3", "sapi": rest + "/sapi/v1",
                       "ws": {**bot.urls["api"]["ws"], "ws-api": {"spot": ws}}}


_KRAKEN_SECRET = base64.b64encode(b"kraken-stream-canary-5f3a9c" + bytes(range(37))).decode()
_EC_PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption()).decode()


CASES = [
    Case("bitstamp", {"api_key": "bitstampStreamKey01", "api_secret": "bitstamp-stream-canary-5f3a9c"},
         "/", {}, _bitstamp_urls, bot_login=None,
         acting='{"event": "bts:cancel_order", "data": {"id": 1}}',
         public='{"event": "bts:subscribe", "data": {"channel": "live_trades_btcusd"}}',
         private='{"event": "bts:subscribe", "data": {"channel": "private-my_orders_btcusd-0", "auth": "placeholder"}}',
         ping='{"event": "bts:heartbeat"}', pong=lambda t: json.loads(t).get("event") == "bts:heartbeat",
         # the channel is shown with the user id the bot was told (0), not the account's
         accepted=lambda m: m.get("event") == "bts:subscription_succeeded" and m["channel"].endswith("-0"),
         refused=lambda m: m.get("event") == "bts:error",
         symbol="BTC/USD", coid="streambs1", op_key="event", expected_ops=("bts:subscribe",), ccxt_reads_status=False,
         token_path="/api/v2/websockets_token/"),
    Case("kraken", {"api_key": "krakenStreamKey01", "api_secret": _KRAKEN_SECRET},
         "/v2", {}, _kraken_urls, bot_login=None,
         acting='{"method": "add_order", "params": {"order_type": "limit", "side": "buy", "order_qty": 1, '
                '"symbol": "BTC/USD", "limit_price": 1, "token": "placeholder"}, "req_id": 11}',
         public='{"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"]}, "req_id": 12}',
         private='{"method": "subscribe", "params": {"channel": "executions", "token": "placeholder", '
                 '"snap_orders": true}, "req_id": 13}',
         ping='{"method": "ping", "req_id": 14}', pong=lambda t: json.loads(t).get("method") == "pong",
         accepted=lambda m: m.get("success") is True, refused=lambda m: m.get("success") is False,
         symbol="BTC/USD", coid="streamkr1", op_key="method", ccxt_reads_coid=False,
         expected_ops=("subscribe",), bot_secret=base64.b64encode(b"placeholder").decode(),
         token_path="/0/private/GetWebSocketsToken"),
    Case("binance", {"api_key": "binanceStreamKey01", "api_secret": "binance-stream-canary-5f3a9c"},
         "/ws-api/v3", {"defaultType": "spot"}, _binance_urls, bot_login=None,
         acting='{"id": "o1", "method": "order.place", "params": {"symbol": "BTCUSDT", "side": "BUY", '
                '"type": "MARKET", "quantity": "1", "apiKey": "placeholder", "timestamp": 1, "signature": "00"}}',
         public='{"id": "s1", "method": "ticker.price", "params": {"symbol": "BTCUSDT"}}',
         private='{"id": "s2", "method": "userDataStream.subscribe.signature", "params": '
                 '{"apiKey": "placeholder", "timestamp": 1, "signature": "00"}}',
         ping='{"id": "p1", "method": "ping"}', pong=lambda t: json.loads(t).get("result") == {},
         accepted=lambda m: m.get("status") == 200, refused=lambda m: m.get("status") != 200 and "error" in m,
         coid="streambn1", op_key="method", expected_ops=("userDataStream.subscribe.signature",)),
    Case("bybit", {"api_key": "bybit_stream_key_01", "api_secret": "bybit-stream-canary-5f3a9c"},
         "/v5/private", {"defaultType": "spot"}, _bybit_urls,
         bot_login='{"op": "auth", "args": ["placeholder", "9999999999999", "00"], "req_id": "a1"}',
         acting='{"op": "order.create", "args": [{"symbol": "BTCUSDT", "qty": "1"}], "req_id": "o1"}',
         public='{"op": "subscribe", "args": ["publicTrade.BTCUSDT"], "req_id": "s1"}',
         private='{"op": "subscribe", "args": ["order"], "req_id": "s2"}',
         ping='{"op": "ping", "req_id": "p1"}', pong=lambda t: json.loads(t).get("ret_msg") == "pong",
         accepted=lambda m: m.get("success") is True, refused=lambda m: m.get("success") is False, expected_ops=("auth", "subscribe")),
    Case("okx", {"api_key": "okx-stream-key-01", "api_secret": "OKXSTREAMCANARY5F3A9C0123456789",
                 "passphrase": "StreamPass1!"},
         "/ws/v5/private", {}, _okx_urls,
         bot_login='{"op": "login", "args": [{"apiKey": "placeholder", "passphrase": "p", '
                   '"timestamp": "1", "sign": "x"}]}',
         acting='{"id": "o1", "op": "order", "args": [{"instId": "BTC-USDT", "side": "buy", "sz": "1"}]}',
         public='{"op": "subscribe", "args": [{"channel": "tickers", "instId": "BTC-USDT"}]}',
         private='{"op": "subscribe", "args": [{"channel": "orders", "instType": "ANY"}]}',
         ping="ping", pong=lambda t: t == "pong",
         accepted=lambda m: m.get("event") in ("login", "subscribe") and m.get("code", "0") == "0",
         refused=lambda m: m.get("event") == "error" or m.get("code") not in (None, "0"), expected_ops=("login", "subscribe")),
    Case("bitget", {"api_key": "bg_stream_key_01", "api_secret": "bg-stream-canary-5f3a9c0123456789",
                    "passphrase": "StreamPass1"},
         "/v2/ws/private", {}, _bitget_urls,
         bot_login='{"op": "login", "args": [{"apiKey": "placeholder", "passphrase": "p", '
                   '"timestamp": "1", "sign": "x"}]}',
         acting='{"id": "o1", "op": "trade", "args": [{"instId": "BTCUSDT", "channel": "place-order"}]}',
         public='{"op": "subscribe", "args": [{"instType": "SPOT", "channel": "ticker", "instId": "BTCUSDT"}]}',
         private='{"op": "subscribe", "args": [{"instType": "SPOT", "channel": "orders", "instId": "default"}]}',
         ping="ping", pong=lambda t: t == "pong",
         accepted=lambda m: m.get("event") in ("login", "subscribe") and str(m.get("code", 0)) == "0",
         refused=lambda m: m.get("event") == "error" or str(m.get("code")) not in ("None", "0"), expected_ops=("login", "subscribe")),
    Case("bitfinex", {"api_key": "bitfinex-stream-key-01", "api_secret": "bitfinex-stream-canary-5f3a9c"},
         "/ws/2", {}, _bitfinex_urls,
         bot_login='{"event": "auth", "apiKey": "placeholder", "authSig": "00", "authNonce": 1, '
                   '"authPayload": "AUTH1"}',
         acting='[0, "on", null, {"type": "EXCHANGE LIMIT", "symbol": "tBTCUSD", "amount": "1", "price": "1"}]',
         public='{"event": "subscribe", "channel": "trades", "symbol": "tBTCUSD"}',
         private=None, ping='{"event": "ping", "cid": 7}', pong=lambda t: json.loads(t).get("event") == "pong",
         accepted=lambda m: m.get("status") == "OK", refused=lambda m: m.get("event") == "error",
         symbol="BTC/USD", coid=8101, op_key="event", ccxt_reads_coid=False, expected_ops=("auth",)),
    Case("deribit", {"api_key": "drbStreamClient1", "api_secret": "deribit-stream-canary-5f3a9c0123"},
         "/ws/api/v2", {}, _deribit_urls,
         bot_login='{"jsonrpc": "2.0", "id": 1, "method": "public/auth", "params": {"grant_type": '
                   '"client_signature", "client_id": "placeholder", "timestamp": 1, "signature": "00", '
                   '"nonce": "n", "data": ""}}',
         acting='{"jsonrpc": "2.0", "id": 2, "method": "private/buy", "params": '
                '{"instrument_name": "BTC-PERPETUAL", "amount": 10}}',
         public='{"jsonrpc": "2.0", "id": 3, "method": "public/subscribe", "params": {"channels": '
                '["trades.BTC-PERPETUAL.raw"]}}',
         private='{"jsonrpc": "2.0", "id": 4, "method": "private/subscribe", "params": {"channels": '
                 '["user.orders.any.any.raw"]}}',
         ping='{"jsonrpc": "2.0", "id": 5, "method": "public/test", "params": {}}',
         pong=lambda t: "version" in json.loads(t).get("result", {}),
         accepted=lambda m: "result" in m, refused=lambda m: "error" in m,
         symbol="BTC/USD:BTC", coid="streamdrb1", amount=100, coid_param="label", op_key="method",
         ccxt_reads_coid=False, expected_ops=("public/auth", "private/subscribe")),
    Case("coinbase", {"api_key": "organizations/org-stream/apiKeys/key-stream", "api_secret": _EC_PEM},
         "/", {}, _coinbase_urls, bot_login=None,
         acting='{"type": "order", "channel": "user", "product_ids": ["BTC-USD"]}',
         public='{"type": "subscribe", "channel": "ticker", "product_ids": ["BTC-USD"]}',
         private='{"type": "subscribe", "channel": "user", "product_ids": [], "jwt": "placeholder"}',
         ping='{"type": "subscribe", "channel": "heartbeats"}',
         pong=lambda t: json.loads(t).get("channel") == "subscriptions",
         accepted=lambda m: m.get("channel") == "subscriptions", refused=lambda m: m.get("type") == "error",
         symbol="BTC/USD", coid="streamcb1", coid_param="client_order_id", op_key="type",
         expected_ops=("subscribe",)),
]


#: what the exchange receives once the bot's subscription is relayed
_SUBSCRIBED = ("subscribe", "auth", "private/subscribe", "userDataStream.subscribe.signature", "bts:subscribe")


def _policy(exchange: str, client: str, allow: str) -> str:
    return f"""
version = 1
client = "{client}"

[[grants]]
account = "{exchange}-main"
allow = [{allow}]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [AccountSpec(f"{c.exchange}-main", c.exchange, c.fields) for c in CASES]
    policies = {}
    for c in CASES:
        policies[f"{c.exchange}-bot"] = _policy(c.exchange, f"{c.exchange}-bot", '"read", "trade", "cancel"')
        policies[f"{c.exchange}-no-read"] = _policy(c.exchange, f"{c.exchange}-no-read", '"cancel"')
    with start_stack(tmp_path_factory.mktemp("streams"), accounts, policies) as s:
        yield s


def _ws_url(stack: Stack, case: Case) -> str:
    return stack.proxy_url.replace("http://", "ws://") + f"/x/{case.exchange}-main{case.path}"


def _bot(stack: Stack, case: Case) -> Any:
    token = stack.token(f"{case.exchange}-bot")
    auth = {"Proxy-Authorization": f"Bearer {token}"}
    bot = getattr(ccxt.pro, case.exchange)({
        "apiKey": "placeholder", "secret": case.bot_secret, "password": "placeholder", "headers": auth,
        "options": {"fetchMarkets": {"types": ["spot"]}, "ws": {"options": {"headers": auth}},
                    **case.ccxt_options}})
    case.point_urls(bot, stack.proxy_url + f"/x/{case.exchange}-main", _ws_url(stack, case))
    return bot


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.exchange)
def test_private_stream_ccxt_bot_sees_its_rest_order_on_watch_orders(stack: Stack, case: Case) -> None:
    emulator = stack.emulator(f"{case.exchange}-main")

    async def run() -> None:
        bot = _bot(stack, case)
        try:
            await bot.load_markets()
            watching = asyncio.create_task(bot.watch_orders(case.symbol))
            for _ in range(200):  # until the proxy has relayed the subscription
                if any(isinstance(m, dict) and m.get(case.op_key) in _SUBSCRIBED
                       for m in emulator.streams.received):
                    break
                await asyncio.sleep(0.05)
            order = await bot.create_order(case.symbol, "limit", "buy", case.amount, 30000,
                                           {case.coid_param: case.coid})
            seen = await asyncio.wait_for(watching, 20)
            assert [o["id"] for o in seen] == [order["id"]]
            assert seen[0]["status"] == "open" or not case.ccxt_reads_status
            assert seen[0]["clientOrderId"] == str(case.coid) or not case.ccxt_reads_coid
        finally:
            await bot.close()

    asyncio.run(run())
    logins = [m for m in emulator.streams.received
              if isinstance(m, dict) and m.get(case.op_key) in ("auth", "login", "public/auth")]
    assert logins or case.bot_login is None  # Coinbase: no login, each subscription carries a JWT
    assert "placeholder" not in json.dumps(emulator.streams.received)  # only the proxy's credentials arrived


async def _exchange_messages(stack: Stack, case: Case, client: str, messages: list[str]) -> list[str]:
    async with aiohttp.ClientSession() as session, session.ws_connect(
            _ws_url(stack, case), headers={"Proxy-Authorization": f"Bearer {stack.token(client)}"}) as ws:
        answers = []
        for message in messages:
            await ws.send_str(message)
            while True:  # the answer, past account data frames the exchange pushes meanwhile
                text = str((await ws.receive(timeout=10)).data)
                if not text.startswith("[") and '"event": "info"' not in text \
                        and '"channel": "status"' not in text and '"type": "snapshot"' not in text:
                    break
            answers.append(text)
        return answers


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.exchange)
def test_private_stream_bot_login_answered_by_proxy_acting_and_public_refused(stack: Stack, case: Case) -> None:
    emulator = stack.emulator(f"{case.exchange}-main")
    before = len(emulator.streams.received)
    messages = [case.bot_login or case.ping, case.acting, case.public, *([case.private] if case.private else []),
                case.ping]
    login, acting, public, *private, pong = asyncio.run(_exchange_messages(
        stack, case, f"{case.exchange}-bot", messages))
    assert case.accepted(json.loads(login)) if case.bot_login else case.pong(login)
    assert case.refused(json.loads(acting)) and "endpoint_forbidden" in acting
    assert case.refused(json.loads(public)) and "endpoint_forbidden" in public
    assert all(case.accepted(json.loads(p)) for p in private)
    assert case.pong(pong)
    sent = emulator.streams.received[before:]
    ping = json.loads(case.ping) if case.ping.startswith("{") else None  # some pings are text
    assert [m.get(case.op_key) for m in sent if m != ping] == list(case.expected_ops)
    assert "placeholder" not in json.dumps(sent)
    records = [r for r in iter_records(stack.dir / "audit") if r.get("account") == f"{case.exchange}-main"
               and str(r.get("method", "")).startswith("WS")]
    rules = {(r["decision"], r["rule"]) for r in records}
    assert {("allow", "stream.open"), ("deny", "endpoint_forbidden")} <= rules
    assert ("allow", "stream.subscribe") in rules or case.private is None
    if case.token_path is not None:  # the proxy's own token: fetched through the send path, audited
        fetched = [r for r in iter_records(stack.dir / "audit") if r.get("account") == f"{case.exchange}-main"
                   and r.get("rule") == "stream.token"]
        assert fetched and all(r["path"] == case.token_path for r in fetched)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.exchange)
def test_private_stream_upgrade_refused_with_contract_codes(stack: Stack, case: Case) -> None:
    async def status(url: str, token: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(url, headers={"Proxy-Authorization": f"Bearer {token}"}):
                    return 101, ""
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status, str(exc.headers.get("X-Proxy-Error") if exc.headers else "")

    url = _ws_url(stack, case)
    assert asyncio.run(status(url, "nope.nope.nope")) == (401, "unauthenticated")
    assert asyncio.run(status(url, stack.token(f"{case.exchange}-no-read"))) == (403, "policy_denied")
    assert asyncio.run(status(url + "x", stack.token(f"{case.exchange}-bot"))) == (403, "endpoint_forbidden")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.exchange)
def test_private_stream_never_shows_the_key_or_secret_to_the_bot(stack: Stack, case: Case) -> None:
    texts = asyncio.run(_exchange_messages(stack, case, f"{case.exchange}-bot",
                                           [case.bot_login or case.ping, case.private or case.ping]))
    for secret in case.fields.values():  # the key, the secret and any passphrase
        assert all(secret not in t for t in texts)


@pytest.mark.parametrize("case", [c for c in CASES if c.exchange in ("bybit", "kraken")], ids=lambda c: c.exchange)
def test_private_stream_flooding_refused_messages_is_closed_after_the_burst(stack: Stack, case: Case) -> None:
    """Each refused message is an fsynced audit record: a bot that keeps sending them gets
    AUDITED_BURST of them (plus what refills meanwhile), then one rate_limited refusal and a close
    with 1008; nothing it sent reaches the exchange."""
    emulator = stack.emulator(f"{case.exchange}-main")
    before = len(emulator.streams.received)
    sent = 200

    async def flood() -> tuple[list[str], int | None]:
        async with aiohttp.ClientSession() as session, session.ws_connect(
                _ws_url(stack, case), headers={"Proxy-Authorization": f"Bearer {stack.token(f'{case.exchange}-bot')}"}
        ) as ws:
            for _ in range(sent):  # all at once: no refill between them to speak of
                await ws.send_str(case.acting)
            answers: list[str] = []
            while True:
                msg = await ws.receive(timeout=30)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    return answers, ws.close_code
                answers.append(str(msg.data))

    answers, close_code = asyncio.run(flood())
    assert close_code == 1008
    refused = [a for a in answers if "endpoint_forbidden" in a]
    limited = [a for a in answers if "rate_limited" in a]
    assert len(limited) == 1 and all(case.refused(json.loads(a)) for a in refused + limited)
    assert stream_burst() <= len(refused) < sent
    acting = json.loads(case.acting)
    assert acting not in emulator.streams.received[before:]
    request_ids = {a.rsplit("(request ", 1)[1].split(")")[0] for a in limited}
    records = [r for r in iter_records(stack.dir / "audit") if r.get("request_id") in request_ids]
    assert [r["rule"] for r in records if r["decision"] == "deny"].count("stream.rate_limit") == 1
    assert [r["rule"] for r in records if r["decision"] == "deny"].count("endpoint_forbidden") == len(refused)
    deadline = time.monotonic() + 15  # the close record is queued, not awaited
    while not (closes := [r for r in iter_records(stack.dir / "audit")
                          if r.get("request_id") in request_ids and r["rule"] == "stream.close"]):
        assert time.monotonic() < deadline, "no stream.close record"
        time.sleep(0.05)
    assert [r["stream_close"] for r in closes] == ["closed by the proxy: too many subscriptions or refused messages"]


def stream_burst() -> int:
    from proxy.pipeline.stream import AUDITED_BURST

    return AUDITED_BURST
