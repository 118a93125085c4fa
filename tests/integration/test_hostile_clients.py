"""Issue 14: hostile clients cannot stall, crash or fill the proxy (a real ``serve`` process).

* case 1: an idle kept-alive connection is closed; while 50 hostile connections stream endless headers, send thousands of headers or a
  huge request line, trickle bodies or hold sockets silent, a bot's orders keep being answered
  and the worker's memory stays bounded; each hostile connection gets its own clear answer
  (431, 414, 408) and one source beyond its connection cap gets 503.
* case 3: the malformed inputs that were 503 "internal error" are 400 bad_request (or the
  policy's own answer), and nothing is logged at ERROR.
* case 4: an unknown account and an account the client holds no grant on are answered
  alike, whatever the body (both read it first).

No timing assertion: only answers, counts and memory are asserted.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

BINANCE = {"api_key": "binanceKey0123456789", "api_secret": "b" * 64}
OKX = {"api_key": "okx-real-key-0123", "api_secret": "OKXREALSECRET0123456789ABCDEF",
       "passphrase": "RealPass1!"}
COINBASE_KEY = "organizations/org-int/apiKeys/key-int"
POLICY = """
version = 1
client = "bot"

[[grants]]
account = "binance-main"
allow = ["read", "trade", "cancel"]
max_order_notional = "99999999999999999999"

[[grants.budgets]]
per = "client"
window = "1m"
max_notional = "9999999999"

[[grants]]
account = "okx-main"
allow = ["read", "trade", "cancel"]

[[grants]]
account = "coinbase-main"
allow = ["read", "trade", "cancel"]
"""
OTHER = """
version = 1
client = "other"

[[grants]]
account = "secret-desk"
allow = ["read"]
"""
LIMITS = """[server.limits]
max_head_bytes = 16384
max_request_line_bytes = 4096
max_headers = 64
head_timeout_s = 1.5
body_timeout_s = 1.5
keepalive_timeout_s = 2
max_connections = 512
max_connections_per_source = 8

"""
HOSTILE_SOURCES = [f"127.0.0.{n}" for n in range(2, 12)]  # 10 sources x 5 connections
CAPPED_SOURCE = "127.0.0.30"


def _coinbase_fields() -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()).decode()
    return {"api_key": COINBASE_KEY, "api_secret": pem}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    accounts = [
        AccountSpec("binance-main", "binance", BINANCE),
        AccountSpec("okx-main", "okx", OKX),
        AccountSpec("coinbase-main", "coinbase", _coinbase_fields()),
        AccountSpec("secret-desk", "binance", {"api_key": "deskKey0123456789", "api_secret": "d" * 64}),
    ]
    with start_stack(tmp_path_factory.mktemp("hostile"), accounts, {"bot": POLICY, "other": OTHER},
                     start_proxy=False) as s:
        s.edit_config("[vault]", LIMITS + "[vault]")
        s.start_proxy()
        s.wait_ready()
        yield s


def _address(stack: Stack) -> tuple[str, int]:
    url = urlsplit(stack.proxy_url)
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


def send(stack: Stack, method: str, target: str, *, body: bytes = b"", ctype: str = "",
         token: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = _address(stack)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    sent = {"Proxy-Authorization": f"Bearer {token or stack.token('bot')}", **(headers or {})}
    if ctype:
        sent["Content-Type"] = ctype
    try:
        conn.request(method, target, body=body or None, headers=sent)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ------------------------------------------------------------------ case 3


def test_malformed_inputs_are_bad_requests_not_internal_errors(stack: Stack) -> None:
    okx_order = "/x/okx-main/api/v5/trade/order"
    cases = {
        "coinbase-empty-query-pair": ("GET", "/x/coinbase-main/api/v3/brokerage/time?&", b"", ""),
        "lone-surrogate": ("POST", okx_order, b'{"instId":"\\ud800","tdMode":"cash","side":"buy",'
                           b'"ordType":"limit","sz":"0.01","px":"50000"}', "application/json"),
        "integer-of-5000-digits": ("POST", okx_order, b'{"instId":"BTC-USDT","sz":' + b"1" * 5000 + b"}",
                                   "application/json"),
        "deeply-nested-json": ("POST", okx_order, b"[" * 30_000 + b"]" * 30_000, "application/json"),
    }
    wrong = {}
    for name, (method, target, body, ctype) in cases.items():
        status, headers, raw = send(stack, method, target, body=body, ctype=ctype)
        if (status, headers.get("x-proxy-error")) != (400, "bad_request"):
            wrong[name] = (status, raw[:200])
    assert not wrong
    # 1e10 of notional under a large budget: the budget's own answer, not an internal error
    status, headers, raw = send(
        stack, "POST", "/x/binance-main/api/v3/order", ctype="application/x-www-form-urlencoded",
        body=b"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=100000&price=100000")
    assert (status, headers.get("x-proxy-error")) == (429, "rate_limited"), raw
    assert b"(rule budget.client.notional.1m;" in raw
    assert "internal error" not in stack.proxy_log()
    assert '"level": "error"' not in stack.proxy_log()


# ------------------------------------------------------------------ case 4


@pytest.mark.parametrize(("what", "body", "headers"), [
    ("ordinary", b"a=1", {}),
    ("over-the-limit", b"a=" + b"1" * 70_000, {}),
    ("bad-content-length", b"", {"Content-Length": "abc"}),
])
def test_unknown_and_ungranted_accounts_are_answered_alike(
    stack: Stack, what: str, body: bytes, headers: dict[str, str]
) -> None:
    answers = []
    for account in ("no-such-desk", "secret-desk"):
        status, got, raw = send(stack, "POST", f"/x/{account}/api/v3/order", body=body,
                                ctype="application/x-www-form-urlencoded", headers=headers)
        # the same refusal, in the same format; only the request id differs
        answers.append((status, got.get("x-proxy-error"), re.sub(rb"request [0-9a-f]+", b"", raw)))
    assert answers[0] == answers[1], what
    assert answers[0][0] in (400, 403, 413)


# ------------------------------------------------------------------ case 1


@dataclass
class Hostile:
    kind: str
    source: str
    answer: bytes = b""
    token: str = ""
    sent: int = 0
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


def _connect(stack: Stack, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(30)
    sock.connect(_address(stack))
    return sock


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def _run_hostile(stack: Stack, h: Hostile, started: threading.Barrier) -> None:
    try:
        sock = _connect(stack, h.source)
    except OSError as exc:
        h.error = f"connect: {exc}"
        started.wait()
        h.done.set()
        return
    started.wait()
    try:
        head = b"POST /x/binance-main/api/v3/order HTTP/1.1\r\nHost: proxy\r\n"
        if h.kind == "endless-header":  # up to 120 MB of one header value, until refused
            sock.sendall(head + b"X-Flood: ")
            chunk = b"a" * 65536
            while h.sent < 120 * 1024 * 1024:
                sock.sendall(chunk)
                h.sent += len(chunk)
        elif h.kind == "many-headers":
            sock.sendall(head + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n")
        elif h.kind == "long-request-line":
            sock.sendall(b"GET /x/binance-main/" + b"a" * 200_000 + b" HTTP/1.1\r\n\r\n")
        elif h.kind.startswith("trickle-body"):
            auth = b"" if h.kind.endswith("no-token") else b"Proxy-Authorization: Bearer %s\r\n" % h.token.encode()
            sock.sendall(head + auth + b"Content-Length: 10000\r\nContent-Type: text/plain\r\n\r\n")
            while not h.done.wait(0.2):  # a byte at a time until the proxy gives up
                sock.sendall(b"x")
                h.sent += 1
        elif h.kind == "silent":
            pass
    except OSError:
        pass  # the proxy closed the connection: read what it said
    h.answer = _read_answer(sock)
    sock.close()
    h.done.set()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_hostile_connections_do_not_stall_orders_or_grow_memory(stack: Stack) -> None:
    pid = stack.procs[0].pid
    kinds = ["endless-header", "many-headers", "long-request-line", "trickle-body",
             "trickle-body-no-token", "silent"]
    token = stack.token("bot")
    hostiles = [Hostile(kinds[i % len(kinds)], HOSTILE_SOURCES[i % len(HOSTILE_SOURCES)], token=token)
                for i in range(50)]
    capped = [Hostile("silent", CAPPED_SOURCE) for _ in range(12)]
    started = threading.Barrier(len(hostiles) + len(capped) + 1)
    rss_before = _rss_kib(pid)
    threads = [threading.Thread(target=_run_hostile, args=(stack, h, started), daemon=True)
               for h in hostiles + capped]
    for t in threads:
        t.start()
    started.wait()
    answered: list[int] = []
    rss_peak = rss_before
    with httpx.Client(base_url=stack.proxy_url, timeout=30,
                      headers={"Proxy-Authorization": f"Bearer {token}"}) as bot:
        while not all(h.done.is_set() for h in hostiles + capped) or len(answered) < 10:
            r = bot.post("/x/binance-main/api/v3/order", content=(
                "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=50000"
                f"&newClientOrderId={uuid.uuid4().hex[:20]}"),
                headers={"Content-Type": "application/x-www-form-urlencoded"})
            answered.append(r.status_code)
            rss_peak = max(rss_peak, _rss_kib(pid))
            if len(answered) > 2000:
                break
    for t in threads:
        t.join(timeout=60)
    assert set(answered) == {200}, answered
    by_kind: dict[str, set[int]] = {}
    for h in hostiles:
        by_kind.setdefault(h.kind, set()).add(_status(h.answer))
    assert by_kind == {
        "endless-header": {431}, "many-headers": {431}, "long-request-line": {414},
        "trickle-body": {408}, "trickle-body-no-token": {401}, "silent": {408},
    }, by_kind
    streamed = sum(h.sent for h in hostiles if h.kind == "endless-header")
    assert streamed >= 10 * 16384  # each streamer sent past the head limit before its answer
    assert rss_peak - rss_before < 64 * 1024, (rss_before, rss_peak)  # KiB: bounded, not + streamed
    capped_status = sorted(_status(h.answer) for h in capped)
    assert capped_status.count(503) == len(capped) - 8  # the source's cap is 8
    assert capped_status.count(408) == 8


def test_an_idle_kept_alive_connection_is_closed(stack: Stack) -> None:
    sock = _connect(stack, "127.0.0.40")
    sock.sendall(b"GET /x/binance-main/api/v3/account HTTP/1.1\r\nHost: proxy\r\n\r\n")
    answer = _read_answer(sock)  # the 401, then the proxy closes the idle connection (2 s here)
    sock.close()
    assert _status(answer) == 401
    assert b"connection: close" not in answer.lower()  # kept alive at first, then closed idle


def test_pipelined_requests_in_one_write_are_each_bounded_not_refused(stack: Stack) -> None:
    """40 requests of ~1.6 KiB each sent in one write (more than one head's limit in all)."""
    token = stack.token("bot")
    one = (f"GET /x/binance-main/api/v3/account HTTP/1.1\r\nHost: proxy\r\nProxy-Authorization: Bearer "
           f"{token}\r\nX-Pad: {'p' * 1000}\r\n\r\n").encode()
    sock = _connect(stack, "127.0.0.41")
    sock.sendall(one * 40)
    data = b""
    while data.count(b"HTTP/1.1 ") < 40:
        chunk = sock.recv(65536)
        assert chunk, data[-300:]
        data += chunk
    sock.close()
    assert data.count(b"HTTP/1.1 200 ") == 40


def test_a_forwarded_for_header_does_not_make_a_new_source(stack: Stack) -> None:
    """The source address is the connection's peer: a client on the proxy's own host naming a
    fresh X-Forwarded-For address each time still spends its one address's budget of
    refusals without a token (10/s, bursts of 20), and so meets 429."""
    statuses = [send(stack, "GET", "/x/binance-main/api/v3/account", token="not-a-token",
                     headers={"X-Forwarded-For": f"10.9.{n // 250}.{n % 250 + 1}"})[0] for n in range(60)]
    assert set(statuses) == {401, 429}
