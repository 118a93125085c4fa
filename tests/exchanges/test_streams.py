"""The proxy's stream logins against the exchanges' published examples and independent
recomputation of their documented formulas, and how bot messages are classified."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from proxy import exchanges
from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials
from proxy.exchanges.deribit.stream import login_signature
from proxy.exchanges.streams import StreamKind, allowed_channel
from proxy.model.request import Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey

STAMP = Stamp(now_ms=1_700_000_000_000, nonce=1_700_000_000_000_123, unique="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")


def _creds(exchange: str, fields: dict[str, str]) -> Credentials:
    return exchanges.get(exchange).load_credentials({k: Secret(v) for k, v in fields.items()}, 1)


def test_streams_deribit_login_signature_matches_the_published_example() -> None:
    # Deribit's "Client Signature (WebSocket)" example (ClientId AMANDA).
    key = HmacKey(Secret("AMANDASECRECT"))
    assert login_signature(key, 1576074319000, "1iqt2wls") == \
        "56590594f97921b09b18f166befe0d1319b198bbcdad7ca73382de2f88fe9aa1"


def test_streams_bybit_login_is_the_documented_auth() -> None:
    stream = exchanges.get("bybit").capabilities.private_stream
    assert stream is not None
    text = stream.login(_creds("bybit", {"api_key": "k1", "api_secret": "s3cret"}), STAMP)
    assert text is not None
    login = json.loads(text)
    expires = str(STAMP.now_ms + 10_000)
    want = hmac.new(b"s3cret", f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
    assert login == {"op": "auth", "args": ["k1", expires, want]}


@pytest.mark.parametrize(("exchange", "verify_path"), [("okx", "/users/self/verify"), ("bitget", "/user/verify")])
def test_streams_passphrase_login_is_the_documented_login(exchange: str, verify_path: str) -> None:
    stream = exchanges.get(exchange).capabilities.private_stream
    assert stream is not None
    fields = {"api_key": "k1", "api_secret": "s3cret", "passphrase": "pp"}
    text = stream.login(_creds(exchange, fields), STAMP)
    assert text is not None
    login = json.loads(text)
    ts = str(STAMP.now_ms // 1000)
    sign = base64.b64encode(hmac.new(b"s3cret", f"{ts}GET{verify_path}".encode(), hashlib.sha256).digest()).decode()
    assert login == {"op": "login", "args": [{"apiKey": "k1", "passphrase": "pp", "timestamp": ts, "sign": sign}]}


def test_streams_bitfinex_login_uses_the_rest_nonce() -> None:
    stream = exchanges.get("bitfinex").capabilities.private_stream
    assert stream is not None
    text = stream.login(_creds("bitfinex", {"api_key": "k1", "api_secret": "s3cret"}), STAMP)
    assert text is not None
    login = json.loads(text)
    payload = f"AUTH{STAMP.nonce}"
    assert login == {"event": "auth", "apiKey": "k1", "authNonce": STAMP.nonce, "authPayload": payload,
                     "authSig": hmac.new(b"s3cret", payload.encode(), hashlib.sha384).hexdigest()}


@pytest.mark.parametrize(("exchange", "raw", "kind"), [
    ("bybit", '{"op": "auth", "args": []}', StreamKind.LOGIN),
    ("bybit", '{"op": "order.create", "args": []}', StreamKind.OTHER),
    ("okx", "ping", StreamKind.PING),
    ("okx", '{"op": "batch-orders", "args": []}', StreamKind.OTHER),
    ("bitfinex", '[0, "on", null, {}]', StreamKind.OTHER),
    ("bitfinex", '{"event": "ping", "cid": 1}', StreamKind.PING),
    ("deribit", '{"method": "private/sell", "id": 1}', StreamKind.OTHER),
    ("deribit", '{"method": "private/subscribe", "params": {"channels": ["user.orders.any.any.raw"]}}',
     StreamKind.SUBSCRIBE),
])
def test_streams_classify_bot_messages(exchange: str, raw: str, kind: StreamKind) -> None:
    stream = exchanges.get(exchange).capabilities.private_stream
    assert stream is not None and stream.classify(raw).kind is kind


@pytest.mark.parametrize("raw", ["", "{", "NaN", '{"op": 1}', "x" * 20_000, '{"a": Infinity}'])
def test_streams_hostile_bot_messages_are_bad_requests(raw: str) -> None:
    stream = exchanges.get("bybit").capabilities.private_stream
    assert stream is not None
    with pytest.raises(BadRequest):
        stream.classify(raw)


def test_streams_channels_match_whole_names_or_qualified_names_only() -> None:
    private = frozenset({"order", "user.orders"})
    assert allowed_channel("order", private) and allowed_channel("user.orders.any.any.raw", private)
    assert not allowed_channel("orderbook.50.BTCUSDT", private) and not allowed_channel("user.ordersX", private)


@pytest.mark.parametrize("secret", ["s3cret", None])
def test_streams_binance_subscription_is_signed_as_ccxt_signs_it(secret: str | None) -> None:
    # ccxt 4.5.90's own userDataStream.subscribe.signature params (sign_params), same key and time
    import ccxt.pro
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = secret or ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    bot = ccxt.pro.binance({"apiKey": "k1", "secret": pem})
    bot.nonce = lambda: STAMP.now_ms
    bot.options.pop("recvWindow", None)  # the proxy sends none: Binance's default 5000 ms applies
    stream = exchanges.get("binance").capabilities.private_stream
    assert stream is not None
    raw = '{"id": "7", "method": "userDataStream.subscribe.signature", "params": {"apiKey": "x"}}'
    message = stream.classify(raw)
    assert message.kind is StreamKind.SUBSCRIBE
    creds = _creds("binance", {"api_key": "k1", "api_secret": pem})
    sent = json.loads(stream.authorize(message, raw, creds, STAMP, {}))
    assert sent == {"id": "7", "method": "userDataStream.subscribe.signature", "params": bot.sign_params({})}


@pytest.mark.parametrize(("raw", "kind"), [
    ('{"id": 1, "method": "order.place", "params": {}}', StreamKind.OTHER),
    ('{"id": 1, "method": "session.logon", "params": {}}', StreamKind.OTHER),
    ('{"id": 1, "method": "ping"}', StreamKind.PING),
    ('{"id": 1, "method": "userDataStream.unsubscribe", "params": {"subscriptionId": 0}}', StreamKind.UNSUBSCRIBE),
])
def test_streams_binance_classify(raw: str, kind: StreamKind) -> None:
    stream = exchanges.get("binance").capabilities.private_stream
    assert stream is not None and stream.classify(raw).kind is kind
    refusal = json.loads(stream.refusal(stream.classify(raw), "endpoint_forbidden", "no"))
    assert refusal == {"id": 1, "status": 400, "error": {"code": -1020, "msg": "endpoint_forbidden: no"}}


def test_streams_kraken_token_from_the_documented_answer_and_into_each_subscription() -> None:
    # GetWebSocketsToken's documented answer; the subscription is the one ccxt 4.5.90 sends
    stream = exchanges.get("kraken").capabilities.private_stream
    assert stream is not None and stream.token is not None
    documented = b'{"error": [], "result": {"token": "1Dwc4lzSwNWOAwkMdqhssNNFhs1ed606d1WcF3XfEMw", "expires": 900}}'
    grant = stream.token.parse(documented)
    assert grant == {"token": "1Dwc4lzSwNWOAwkMdqhssNNFhs1ed606d1WcF3XfEMw", "valid_s": "900"}
    with pytest.raises(ValueError):
        stream.token.parse(b'{"error": ["EAPI:Invalid key"]}')
    placeholder = json.loads(stream.token.placeholder)  # what ccxt's authenticate() reads
    assert placeholder["error"] == [] and isinstance(placeholder["result"]["token"], str)
    raw = ('{"method": "subscribe", "params": {"channel": "executions", "token": "placeholder", '
           '"snap_orders": true}, "req_id": 1}')
    message = stream.classify(raw)
    assert (message.kind, message.channels) == (StreamKind.SUBSCRIBE, ("executions",))
    creds = _creds("kraken", {"api_key": "k1", "api_secret": base64.b64encode(b"s" * 64).decode()})
    assert json.loads(stream.authorize(message, raw, creds, STAMP, grant)) == {
        "method": "subscribe", "params": {"channel": "executions", "token": grant["token"], "snap_orders": True},
        "req_id": 1}
    acting = stream.classify('{"method": "add_order", "params": {}, "req_id": 2}')
    assert acting.kind is StreamKind.OTHER
    assert json.loads(stream.refusal(acting, "endpoint_forbidden", "no")) == {
        "method": "add_order", "success": False, "error": "endpoint_forbidden: no", "req_id": 2}


def test_streams_bitstamp_token_user_id_and_channels() -> None:
    # websockets_token's documented answer (as quoted in ccxt 4.5.90); ccxt names its channel
    # private-my_orders_{market id}-{user_id} with the user id it was told
    stream = exchanges.get("bitstamp").capabilities.private_stream
    assert stream is not None and stream.token is not None and stream.token.shown is not None
    grant = stream.token.parse(b'{"valid_sec": 60, "token": "siPaT4m6VGQCdsDCVbLBemiphHQs552e", "user_id": 4848701}')
    assert grant == {"token": "siPaT4m6VGQCdsDCVbLBemiphHQs552e", "user_id": "4848701", "valid_s": "60"}
    told = json.loads(stream.token.placeholder)
    raw = json.dumps({"event": "bts:subscribe", "data": {"channel": f"private-my_orders_btcusd-{told['user_id']}",
                                                          "auth": told["token"]}})
    message = stream.classify(raw)
    assert (message.kind, message.channels) == (StreamKind.SUBSCRIBE, ("private-my_orders",))
    creds = _creds("bitstamp", {"api_key": "k1", "api_secret": "s3cret"})
    assert json.loads(stream.authorize(message, raw, creds, STAMP, grant)) == {
        "event": "bts:subscribe",
        "data": {"channel": "private-my_orders_btcusd-4848701", "auth": "siPaT4m6VGQCdsDCVbLBemiphHQs552e"}}
    exchange_text = '{"event": "order_created", "channel": "private-my_orders_btcusd-4848701", "data": {}}'
    assert exchange_text.replace(*stream.token.shown(grant)) == \
        f'{{"event": "order_created", "channel": "private-my_orders_btcusd-{told["user_id"]}", "data": {{}}}}'
    public = stream.classify('{"event": "bts:subscribe", "data": {"channel": "live_trades_btcusd"}}')
    assert public.channels == ("live_trades_btcusd",) and not allowed_channel(public.channels[0], stream.channels)


def test_streams_a_refused_login_is_logged_without_the_echoed_request() -> None:
    """Exchanges echo a refused login (key, expiry, signature); the log keeps code and reason."""
    from proxy.pipeline.stream import refusal_summary

    signature = "9f" * 32
    bybit = json.dumps({"success": False, "ret_msg": "error:USVC1111", "conn_id": "c",
                        "request": {"op": "auth", "args": ["KEY123", "1700000000000", signature]}})
    okx = json.dumps({"event": "error", "code": "60012",
                      "msg": f'Illegal request: {{"op":"login","args":[{{"sign":"{signature}"}}]}}'})
    for raw in (bybit, okx):
        line = refusal_summary(raw)
        assert signature not in line and "KEY123" not in line and ("60012" in line or "USVC1111" in line)
    assert refusal_summary(b"<html>") == "an answer that is not JSON"
