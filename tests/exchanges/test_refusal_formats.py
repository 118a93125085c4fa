"""Every refusal of the proxy, rendered in each exchange's own error format, makes ccxt 4.5.90
raise the class a bot's retry logic treats right (docs/interface.md "Refusals").

The oracle is ccxt itself: its real HTTP client and error handling (``fetch``, the exchange's
``handle_errors``, then its HTTP status table) against a loopback server answering with exactly
the status, headers and body the pipeline builds (``error_reply``). The integration test
``tests/integration/test_ccxt_refusals.py`` drives the same codes through a real ``serve``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ccxt
import pytest

from proxy import errors
from proxy.exchanges import NAMES, for_path, get
from proxy.pipeline.decision import error_reply
from proxy.pipeline.http import Reply
from proxy_devkit.emulator.server import BackgroundServer

#: the issue's table: proxy code -> the ccxt class a bot should see
EXPECTED: dict[str, type[Exception]] = {
    "unauthenticated": ccxt.AuthenticationError,
    "forbidden": ccxt.PermissionDenied,
    "endpoint_forbidden": ccxt.PermissionDenied,
    "policy_denied": ccxt.PermissionDenied,
    "bad_request": ccxt.BadRequest,
    "too_large": ccxt.BadRequest,
    "idempotency_conflict": ccxt.InvalidOrder,
    "rate_limited": ccxt.RateLimitExceeded,
    "account_paused": ccxt.ExchangeNotAvailable,
    "not_ready": ccxt.ExchangeNotAvailable,
    "upstream_error": ccxt.ExchangeNotAvailable,
    "upstream_timeout": ccxt.RequestTimeout,
}
#: where that exchange's ccxt maps nothing nearer (docs/interface.md says why)
NEAREST: dict[tuple[str, str], type[Exception]] = {
    ("binance", "rate_limited"): ccxt.DDoSProtection,        # every Binance 429, before the body
    ("bitfinex", "idempotency_conflict"): ccxt.BadRequest,  # no code maps to InvalidOrder
    ("coinbase", "idempotency_conflict"): ccxt.BadRequest,
}
REFUSALS: dict[str, errors.Refusal] = {
    "unauthenticated": errors.Unauthenticated("missing or invalid token"),
    "forbidden": errors.Forbidden("no such account, or not granted to this client"),
    "endpoint_forbidden": errors.EndpointForbidden("POST /x is a withdraw endpoint; never allowed"),
    "policy_denied": errors.PolicyDenied("quantity 2 is over 0.5", rule="max_order_qty"),
    "bad_request": errors.BadRequest("path: empty segments are not allowed"),
    "too_large": errors.TooLarge("the body is larger than 65536 bytes"),
    "idempotency_conflict": errors.IdempotencyConflict("client order id 'a' was used", rule="idempotency"),
    "rate_limited": errors.RateLimited("over 1/hour", retry_after=7, rule="rate_limit.grant"),
    "account_paused": errors.AccountPaused("kill switch", rule="kill_switch.client"),
    "not_ready": errors.NotReady("the secret for account a is not loaded"),
    "upstream_error": errors.UpstreamError("the exchange could not be reached"),
    "upstream_timeout": errors.UpstreamTimeout("no answer from the exchange in time"),
}


class _Answer:
    """An ASGI app answering every request with the reply set last."""

    def __init__(self) -> None:
        self.reply = Reply(200, (), b"{}")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        reply = self.reply
        headers = [(k.encode(), v.encode()) for k, v in reply.headers]
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})


@pytest.fixture(scope="module")
def answer() -> Iterator[tuple[_Answer, str]]:
    app = _Answer()
    with BackgroundServer(app) as server:
        yield app, server.url


def test_every_code_of_the_table_is_a_refusal_of_the_proxy() -> None:
    assert set(REFUSALS) == set(EXPECTED) == {c.code for c in errors.Refusal.__subclasses__()}


@pytest.mark.parametrize("exchange", NAMES)
@pytest.mark.parametrize("code", list(EXPECTED))
def test_ccxt_raises_the_class_for_the_refusal(answer: tuple[_Answer, str], exchange: str, code: str) -> None:
    app, url = answer
    refusal = REFUSALS[code]
    app.reply = error_reply("4f1c0ffee", refusal, get(exchange))
    bot = getattr(ccxt, exchange)({"enableRateLimit": False})
    with pytest.raises(ccxt.BaseError) as raised:
        bot.fetch(url + "/x/account/some/path", "POST", {"Content-Type": "application/json"}, "{}")
    want = NEAREST.get((exchange, code), EXPECTED[code])
    assert isinstance(raised.value, want), f"{exchange} {code}: {type(raised.value).__name__}: {raised.value}"
    text = str(raised.value)
    assert f"{code}: " in text and f"rule {refusal.rule or code}" in text and "4f1c0ffee" in text, text
    headers = {k.lower(): v for k, v in bot.last_response_headers.items()}
    assert headers["x-proxy-error"] == code
    if code == "rate_limited":
        assert headers["retry-after"] == "7"


@pytest.mark.parametrize(("path", "exchange"), [
    ("/api/v3/order", "binance"), ("/sapi/v1/capital/withdraw/apply", "binance"),
    ("/api/v3/brokerage/orders", "coinbase"), ("/v2/accounts/abc/transactions", "coinbase"),
    ("/v5/order/create", "bybit"), ("/api/v5/trade/order", "okx"),
    ("/api/v2/spot/trade/place-order", "bitget"), ("/api/v2/public/time", "bitget"),
    ("/api/v2/public/get_time", "deribit"), ("/api/v2/private/buy", "deribit"),
    ("/api/v2/buy/btcusd/", "bitstamp"), ("/api/v2/balance/", "bitstamp"),
    ("/v2/auth/w/order/submit", "bitfinex"), ("/0/private/AddOrder", "kraken"),
    ("/nothing/here", None), ("", None),
])
def test_a_path_names_the_exchange_whose_format_answers_before_the_account_is_known(
    path: str, exchange: str | None
) -> None:
    found = for_path(path)
    assert (found.name if found is not None else None) == exchange


def test_a_path_no_exchange_owns_gets_the_proxys_own_json() -> None:
    reply = error_reply("abc123", errors.Forbidden("no such account"), None)
    assert reply.status == 403 and b'"code": "forbidden"' in reply.body
    assert ("x-proxy-error", "forbidden") in reply.headers


def test_the_table_in_docs_interface_is_the_code() -> None:
    """docs/interface.md lists each exchange's native code per refusal: it must not drift."""
    import re

    from proxy import exchanges
    from tests.support.stack import REPO

    text = (REPO / "docs" / "interface.md").read_text()
    table = text.split("| proxy code | Binance", 1)[1].split("\n\n", 1)[0].splitlines()
    order = ["binance", "bitfinex", "bitget", "bitstamp", "bybit", "coinbase", "deribit", "kraken", "okx"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    seen = set()
    for codes_cell, *cells in rows:
        for code in re.findall(r"`([a-z_]+)`", codes_cell):
            seen.add(code)
            for name, cell in zip(order, cells, strict=True):
                native = exchanges.get(name).capabilities.errors.table[code]
                if cell == "*text*":
                    assert native is None, (name, code)
                else:
                    shown = (re.findall(r"`([^`]+)`", cell) or re.findall(r'"([^"]+)"', cell))[0]
                    assert native is not None and str(native).startswith(shown), (name, code, shown)
    assert seen == set(EXPECTED)


@pytest.mark.parametrize("name", NAMES)
def test_every_catalogued_path_answers_in_its_own_exchanges_format(name: str) -> None:
    """The ``errors.paths`` capability, checked for truth: a refusal made before the account is
    known takes this exchange's format for every endpoint of its catalogue."""
    import sys

    exchange = get(name)
    catalogue = sys.modules[type(exchange).__module__].CATALOGUE
    wrong = []
    for endpoint in catalogue.endpoints:
        path = endpoint.path.replace("{", "").replace("}", "")
        found = for_path(path)
        if found is None or found.name != name:
            wrong.append(f"{endpoint.path}: {found.name if found else None}")
    assert not wrong, wrong
