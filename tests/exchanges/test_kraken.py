"""Kraken signing against the published vector and ccxt 4.5.90, and request canonicalisation."""

from __future__ import annotations

import base64
import hashlib
import hmac
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from proxy.errors import BadRequest, EndpointForbidden
from proxy.exchanges.kraken import EXCHANGE, Kraken
from proxy.model.request import Category, Inbound, Stamp
from proxy.model.sensitive import Secret

# docs/exchanges.md, "Test vectors" #3 (Kraken's own documentation).
VEC_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
VEC_NONCE = 1616492376594
VEC_POST = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
VEC_SIGN = (
    "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
)
KEY = "placeholder-kraken-api-key"
FORM = "application/x-www-form-urlencoded"


def creds(secret: str = VEC_SECRET):  # type: ignore[no-untyped-def]
    return EXCHANGE.load_credentials({"api_key": Secret(KEY), "api_secret": Secret(secret)}, 1)


def inbound(path: str, body: str = "", ctype: str = FORM, method: str = "POST",
            query: str = "", headers: tuple[tuple[str, str], ...] = ()) -> Inbound:
    hdrs = ((("content-type", ctype),) if body else ()) + headers
    return Inbound(method, path, query.encode(), hdrs, body.encode())


def sign(prepared, nonce: int = VEC_NONCE):  # type: ignore[no-untyped-def]
    return EXCHANGE.sign(prepared, creds(), Stamp(1, nonce), "api.kraken.com")


def test_kraken_published_vector_signed_end_to_end() -> None:
    """The docs' AddOrder, sent without a nonce, signed with the docs' nonce: same body and
    the published API-Sign."""
    unsigned = "ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
    bot = inbound("/0/private/AddOrder", unsigned)
    out = sign(EXCHANGE.prepare(bot))
    assert out.body.decode() == VEC_POST
    assert dict(out.headers)["API-Sign"] == VEC_SIGN
    assert dict(out.headers)["API-Key"] == KEY
    assert out.path_and_query == "/0/private/AddOrder"


def test_kraken_published_vector_independent_formula() -> None:
    # The SPECS formula, computed here without the module, reproduces the vector too.
    inner = hashlib.sha256(str(VEC_NONCE).encode() + VEC_POST.encode()).digest()
    mac = hmac.new(base64.b64decode(VEC_SECRET), b"/0/private/AddOrder" + inner, hashlib.sha512)
    assert base64.b64encode(mac.digest()).decode() == VEC_SIGN


def _ccxt(path: str, params: dict[str, Any], nonce: int) -> dict[str, Any]:
    ex = ccxt.kraken({"apiKey": KEY, "secret": VEC_SECRET})
    ex.incrementing_nonce = lambda: nonce
    return ex.sign(path, ["private"], "POST", params)  # type: ignore[no-any-return]


CCXT_CASES: list[tuple[str, dict[str, Any]]] = [
    ("AddOrder", {"pair": "XXBTZUSD", "type": "buy", "ordertype": "limit", "volume": "0.01",
                  "price": "50000", "cl_ord_id": "bot-order-1"}),
    ("AddOrder", {"pair": "XBTUSD", "type": "buy", "ordertype": "market", "volume": "100",
                  "oflags": "viqc", "cl_ord_id": "bot-order-2"}),
    ("AddOrder", {"pair": "XETHZUSD", "type": "sell", "ordertype": "stop-loss-limit",
                  "volume": "1.5", "price": "2900", "price2": "2850", "cl_ord_id": "stop-1"}),
    ("CancelOrder", {"cl_ord_id": "bot-order-1"}),
    ("CancelOrder", {"txid": "OABCDE-FGHIJ-KLMNOP"}),
    ("QueryOrders", {"trades": True, "txid": "OABCDE-FGHIJ-KLMNOP"}),
    ("OpenOrders", {}),
    ("BalanceEx", {}),
    ("AddOrderBatch", {"orders": [
        {"type": "buy", "ordertype": "limit", "volume": "0.01", "price": "50000",
         "cl_ord_id": "b-1"},
        {"type": "sell", "ordertype": "limit", "volume": "0.02", "price": "60000",
         "cl_ord_id": "b-2"},
    ], "pair": "XXBTZUSD"}),
    ("CancelOrderBatch", {"orders": ["OABCDE-FGHIJ-KLMNOP", "OQRSTU-VWXYZ-ABCDEF"]}),
]


@pytest.mark.parametrize(("path", "params"), CCXT_CASES)
def test_kraken_request_through_proxy_is_byte_identical_to_ccxt(
    path: str, params: dict[str, Any]
) -> None:
    """ccxt's request as a bot sends it (ccxt's own nonce and headers included) through
    prepare() and sign() with the same nonce gives exactly ccxt's body and API-Sign."""
    bot_nonce, nonce = 1_700_000_000_000, 1_700_000_000_123_456
    sent_by_bot = _ccxt(path, dict(params), bot_nonce)
    want = _ccxt(path, dict(params), nonce)
    bot_headers = tuple((k.lower(), v) for k, v in sent_by_bot["headers"].items())
    bot = Inbound("POST", f"/0/private/{path}", b"", bot_headers, sent_by_bot["body"].encode())
    out = sign(EXCHANGE.prepare(bot), nonce)
    assert out.body.decode() == want["body"]
    got = dict(out.headers)
    assert got["API-Sign"] == want["headers"]["API-Sign"]
    assert got["Content-Type"] == want["headers"]["Content-Type"]
    assert got["API-Key"] == KEY


def test_kraken_public_request_matches_ccxt_and_is_unsigned() -> None:
    ex = ccxt.kraken()
    want = ex.sign("Ticker", ["public"], "GET", {"pair": "XXBTZUSD"})
    query = want["url"].split("?", 1)[1]
    prepared = EXCHANGE.prepare(inbound("/0/public/Ticker", method="GET", query=query))
    assert prepared.category is Category.PUBLIC
    out = sign(prepared)
    assert out.path_and_query == "/0/public/Ticker?" + query
    assert "API-Sign" not in dict(out.headers) and "API-Key" not in dict(out.headers)


def test_kraken_strips_bot_auth_and_ignores_bot_headers() -> None:
    bot = inbound(
        "/0/private/Balance", "nonce=999999999999999999&otp=123456", ctype=FORM,
        headers=(("api-key", "attacker"), ("api-sign", "forged"), ("user-agent", "evil")),
    )
    out = sign(EXCHANGE.prepare(bot), 42)
    assert out.body == b"nonce=42"
    assert {k for k, _ in out.headers} == {"API-Key", "API-Sign", "Content-Type", "User-Agent"}
    assert dict(out.headers)["API-Key"] == KEY


def test_kraken_json_body_nonce_first_and_signed_over_exact_bytes() -> None:
    body = '{"nonce":"1","orders":["OABCDE-FGHIJ-KLMNOP"]}'
    bot = inbound("/0/private/CancelOrderBatch", body, "application/json")
    out = sign(EXCHANGE.prepare(bot), 77)
    assert out.body == b'{"nonce":"77","orders":["OABCDE-FGHIJ-KLMNOP"]}'
    inner = hashlib.sha256(b"77" + out.body).digest()
    path = b"/0/private/CancelOrderBatch"
    mac = hmac.new(base64.b64decode(VEC_SECRET), path + inner, hashlib.sha512)
    assert dict(out.headers)["API-Sign"] == base64.b64encode(mac.digest()).decode()


def test_kraken_limit_order_intent() -> None:
    body = "pair=XXBTZUSD&type=sell&ordertype=limit&volume=0.5&price=60000&cl_ord_id=abc-1"
    prepared = EXCHANGE.prepare(inbound("/0/private/AddOrder", body))
    (intent,) = prepared.intents
    assert prepared.category is Category.TRADE
    assert intent.symbol == "XXBTZUSD" and intent.side == "sell" and intent.order_type == "limit"
    assert intent.quantity == Decimal("0.5") and intent.price == Decimal("60000")
    assert intent.notional == Decimal("30000.0") and intent.client_order_id == "abc-1"


def test_kraken_pairs_are_not_aliased() -> None:
    rest = "type=buy&ordertype=market&volume=1"
    a = EXCHANGE.prepare(inbound("/0/private/AddOrder", f"pair=XBTUSD&{rest}"))
    b = EXCHANGE.prepare(inbound("/0/private/AddOrder", f"pair=XXBTZUSD&{rest}"))
    assert a.intents[0].symbol == "XBTUSD" and b.intents[0].symbol == "XXBTZUSD"


def test_kraken_quote_sized_market_buy_intent() -> None:
    body = "pair=XBTUSD&type=buy&ordertype=market&volume=250&oflags=viqc"
    (intent,) = EXCHANGE.prepare(inbound("/0/private/AddOrder", body)).intents
    assert intent.quantity is None and intent.quote_quantity == Decimal("250")
    assert intent.notional == Decimal("250")


def test_kraken_stop_limit_intent_uses_limit_price() -> None:
    body = "pair=XBTUSD&type=sell&ordertype=stop-loss-limit&volume=1&price=40000&price2=39000"
    (intent,) = EXCHANGE.prepare(inbound("/0/private/AddOrder", body)).intents
    assert intent.price == Decimal("39000")


def test_kraken_batch_has_one_intent_per_order() -> None:
    body = ('{"orders":[{"type":"buy","ordertype":"limit","volume":"1","price":"10",'
            '"cl_ord_id":"a"},'
            '{"type":"sell","ordertype":"limit","volume":"2","price":"20","cl_ord_id":"b"}],'
            '"pair":"XBTUSD"}')
    prepared = EXCHANGE.prepare(inbound("/0/private/AddOrderBatch", body, "application/json"))
    assert [i.side for i in prepared.intents] == ["buy", "sell"]
    assert [i.symbol for i in prepared.intents] == ["XBTUSD", "XBTUSD"]
    assert prepared.endpoint.batch


@pytest.mark.parametrize(
    "path",
    [
        "/0/private/Withdraw", "/0/private/WithdrawCancel", "/0/private/WithdrawAddresses",
        "/0/private/WalletTransfer", "/0/private/AccountTransfer", "/0/private/CreateSubaccount",
        "/0/private/GetApiKeyInfo", "/0/private/Earn/Allocate",
        "/0/private/DepositAddresses", "/0/private/Unknown", "/0/public/Unknown",
    ],
)
def test_kraken_dangerous_and_unknown_endpoints_forbidden(path: str) -> None:
    with pytest.raises(EndpointForbidden):
        EXCHANGE.prepare(inbound(path, "asset=XBT&amount=1"))


def test_kraken_get_on_private_method_forbidden() -> None:
    with pytest.raises(EndpointForbidden):
        EXCHANGE.prepare(inbound("/0/private/Balance", method="GET"))


ORDER = "pair=XBTUSD&type=buy&ordertype=limit&volume=1&price=100"


@pytest.mark.parametrize(
    ("path", "query", "body", "ctype"),
    [
        ("/0/private/AddOrder", "", ORDER + "&volume=2", FORM),
        ("/0/private/AddOrder", "pair=XBTUSD", "type=buy&ordertype=market&volume=1", FORM),
        ("/0/private/AddOrder", "", ORDER.replace("volume=1", "volume=1e3"), FORM),
        ("/0/private/AddOrder", "", ORDER.replace("volume=1", "volume=-1"), FORM),
        ("/0/private/AddOrder", "", ORDER.replace("volume=1", "volume=0"), FORM),
        ("/0/private/AddOrder", "", ORDER.replace("volume=1", "volume=01"), FORM),
        ("/0/private/AddOrder", "", ORDER.replace("price=100", "price=%2B5"), FORM),
        ("/0/private/AddOrder", "", ORDER.replace("price=100", "price=5%25"), FORM),
        ("/0/private/AddOrder", "", ORDER.replace("type=buy", "type=BUY"), FORM),
        ("/0/private/AddOrder", "", ORDER.replace("pair=XBTUSD", "pair=xbtusd"), FORM),
        ("/0/private/AddOrder", "", ORDER.replace("pair=XBTUSD", "pair=XBT%2FUSD"), FORM),
        ("/0/private/AddOrder", "", ORDER + "&evil=1", FORM),
        ("/0/private/AddOrder", "", ORDER + "&close%5Bordertype%5D=limit", FORM),
        ("/0/private/AddOrder", "", ORDER + "&oflags=viqc", FORM),
        ("/0/private/AddOrder", "", ORDER + "&oflags=post,post", FORM),
        ("/0/private/AddOrder", "", "pair=XBTUSD&type=buy&ordertype=market&volume=1&price=5", FORM),
        ("/0/private/AddOrder", "", "pair=XBTUSD&type=buy&ordertype=trailing-stop&volume=1", FORM),
        ("/0/private/AddOrder", "", ORDER, "text/plain"),
        ("/0/private/AddOrder", "", '{"pair":"XBTUSD","pair":"XXBTZUSD"}', "application/json"),
        ("/0/private/AddOrder", "", '{"pair":"XBTUSD","type":"buy","ordertype":"limit",'
                                    '"volume":1e2,"price":"1"}', "application/json"),
        ("/0/private/AddOrderBatch", "", ORDER, FORM),
        ("/0/private/CancelOrder", "", "txid=OABCDE-FGHIJ-KLMNOP&cl_ord_id=x", FORM),
        ("/0/private/addorder", "", ORDER, FORM),
        ("/0/private/../private/AddOrder", "", ORDER, FORM),
        ("/0/private//AddOrder", "", ORDER, FORM),
        ("/0/private/%41ddOrder", "", ORDER, FORM),
    ],
)
def test_kraken_ambiguous_requests_are_bad_requests(
    path: str, query: str, body: str, ctype: str
) -> None:
    with pytest.raises(BadRequest):
        EXCHANGE.prepare(inbound(path, body, ctype, query=query))


def test_kraken_credentials_repr_hides_secret_and_rejects_non_base64() -> None:
    c = creds()
    assert VEC_SECRET not in repr(c) and VEC_SECRET[:10] not in str(c)
    with pytest.raises(ValueError, match="base64"):
        creds("not base64 !!")


def test_kraken_nonce_unit_and_base_urls() -> None:
    assert EXCHANGE.nonce_unit == "us"
    assert Kraken(nonce_unit="ms").nonce_unit == "ms"
    assert EXCHANGE.base_url("live") == "https://api.kraken.com"
    with pytest.raises(ValueError, match="testnet"):
        EXCHANGE.base_url("testnet")
