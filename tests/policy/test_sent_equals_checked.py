"""Hypothesis property on all nine exchanges: what the policy checked is what is signed and sent.

For generated orders in each exchange's own request format: the module prepares them, signs
them, and this test reads the SIGNED outbound request back with its own small reader (from
the exchanges' documented formats, not the module's parser). The symbol, side, quantity (or
quote amount), price and client order id on the wire equal both what the test generated and
the intent the policy evaluated. Canonicalisation is idempotent: preparing the canonical
request again gives the same request and intents.
"""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.exchanges.base import Credentials
from proxy.model.request import Inbound, Intent, Outbound, Prepared, Stamp
from proxy.model.sensitive import Secret

PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption()).decode()
FIELDS = {
    "binance": {"api_key": "binanceKey0123456789", "api_secret": "b" * 64},
    "bybit": {"api_key": "bybitKey0123", "api_secret": "bybit-secret-0123456789abcdef"},
    "okx": {"api_key": "okx-key-0123", "api_secret": "OKXSECRET0123456789ABCDEF", "passphrase": "Pass1!"},
    "bitget": {"api_key": "bg_key_0123", "api_secret": "bg-secret-0123456789abcdef", "passphrase": "Pass1"},
    "bitstamp": {"api_key": "bitstampKey0123456789abcdef0123", "api_secret": "bitstamp-secret-0123"},
    "bitfinex": {"api_key": "bitfinex-key-0123", "api_secret": "bitfinex-secret-0123456789"},
    "kraken": {"api_key": "kraken-key-0123", "api_secret": base64.b64encode(b"kraken-secret-" * 4).decode()},
    "coinbase": {"api_key": "organizations/org/apiKeys/key", "api_secret": PEM},
    "deribit": {"api_key": "drbClient1", "api_secret": "deribit-secret-0123456789"},
}
HOSTS = {
    "binance": "api.binance.com", "bybit": "api.bybit.com", "okx": "www.okx.com", "bitget": "api.bitget.com",
    "bitstamp": "www.bitstamp.net", "bitfinex": "api.bitfinex.com", "kraken": "api.kraken.com",
    "coinbase": "api.coinbase.com", "deribit": "www.deribit.com",
}
JSON_CT = (("content-type", "application/json"),)
FORM_CT = (("content-type", "application/x-www-form-urlencoded"),)


def module(exchange: str) -> Any:
    return importlib.import_module(f"proxy.exchanges.{exchange}").EXCHANGE


CREDS: dict[str, Credentials] = {
    ex: module(ex).load_credentials({k: Secret(v) for k, v in fields.items()}, 1) for ex, fields in FIELDS.items()
}


@dataclass(frozen=True)
class Seen:
    """An order's checked fields, as text exactly as the exchange reads it."""

    symbol: str
    side: str
    quantity: str | None
    quote_quantity: str | None
    price: str | None
    client_order_id: str | None


def from_intent(intent: Intent) -> Seen:
    def text(d: Decimal | None) -> str | None:
        return None if d is None else format(d, "f")
    assert intent.symbol is not None and intent.side is not None
    return Seen(intent.symbol, intent.side, text(intent.quantity), text(intent.quote_quantity),
                text(intent.price), intent.client_order_id)


amounts = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("100000"), places=8,
                      allow_nan=False, allow_infinity=False).map(lambda d: format(d.normalize(), "f"))
sides = st.sampled_from(["buy", "sell"])
ids36 = st.text(alphabet="ABCXYZabcxyz0189-_", min_size=1, max_size=36)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in obj.items() if v is not None}, separators=(",", ":")).encode()


def _form(pairs: dict[str, str | None]) -> str:
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs.items() if v is not None)


Case = tuple[Inbound, Seen]


# ---------------------------------------------------------------- generated bot requests


@st.composite
def binance(draw: st.DrawFn) -> Case:
    symbol, side, qty = draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])), draw(sides), draw(amounts)
    kind = draw(st.sampled_from(["LIMIT", "MARKET", "MARKET_QUOTE"]))
    price = draw(amounts) if kind == "LIMIT" else None
    coid = draw(_opt(ids36))
    params = {"symbol": symbol, "side": side.upper(), "type": kind.removesuffix("_QUOTE"),
              "timeInForce": "GTC" if price else None,
              "quoteOrderQty" if kind == "MARKET_QUOTE" else "quantity": qty,
              "price": price, "newClientOrderId": coid}
    in_query = draw(st.booleans())
    text = _form(params)
    inbound = Inbound("POST", "/api/v3/order", text.encode() if in_query else b"", FORM_CT,
                      b"" if in_query else text.encode())
    quote_sized = kind == "MARKET_QUOTE"
    return inbound, Seen(symbol, side, None if quote_sized else qty, qty if quote_sized else None, price, coid)


@st.composite
def bybit(draw: st.DrawFn) -> Case:
    category = draw(st.sampled_from(["spot", "linear"]))
    symbol, side, qty = draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])), draw(sides), draw(amounts)
    market = draw(st.booleans())
    unit = draw(st.sampled_from([None, "baseCoin", "quoteCoin"])) if market and category == "spot" else None
    price = None if market else draw(amounts)
    coid = draw(_opt(ids36))
    body = _json({"category": category, "symbol": symbol, "side": side.capitalize(),
                  "orderType": "Market" if market else "Limit", "qty": qty, "price": price,
                  "marketUnit": unit, "orderLinkId": coid})
    # BYB-ORDER: spot market orders are sized in quote by default on a Buy, or with quoteCoin
    quote_sized = category == "spot" and market and (unit == "quoteCoin" or (unit is None and side == "buy"))
    return (Inbound("POST", "/v5/order/create", b"", JSON_CT, body),
            Seen(symbol, side, None if quote_sized else qty, qty if quote_sized else None, price, coid))


@st.composite
def okx(draw: st.DrawFn) -> Case:
    spot = draw(st.booleans())
    inst = draw(st.sampled_from(["BTC-USDT", "ETH-USDT"] if spot else ["BTC-USDT-SWAP", "ETH-USD-SWAP"]))
    side, qty = draw(sides), draw(amounts)
    market = spot and draw(st.booleans())
    target = draw(st.sampled_from([None, "base_ccy", "quote_ccy"] if market else [None]))
    price = None if market else draw(amounts)
    coid = draw(_opt(st.text(alphabet="ABCxyz0189", min_size=1, max_size=32)))
    body = _json({"instId": inst, "tdMode": "cash" if spot else "cross", "side": side,
                  "ordType": "market" if market else "limit", "sz": qty, "px": price,
                  "tgtCcy": target, "clOrdId": coid})
    # OKX: a spot market order's sz is quote for a buy and base for a sell, unless tgtCcy says
    quote_sized = market and (target or ("quote_ccy" if side == "buy" else "base_ccy")) == "quote_ccy"
    return (Inbound("POST", "/api/v5/trade/order", b"", JSON_CT, body),
            Seen(inst, side, None if quote_sized else qty, qty if quote_sized else None, price, coid))


@st.composite
def bitget(draw: st.DrawFn) -> Case:
    symbol, side, qty = draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])), draw(sides), draw(amounts)
    market = draw(st.booleans())
    price = None if market else draw(amounts)
    coid = draw(_opt(st.text(alphabet="ABCxyz0189-_+#", min_size=1, max_size=49)))
    body = _json({"symbol": symbol, "side": side, "orderType": "market" if market else "limit",
                  "force": None if market else "gtc", "size": qty, "price": price, "clientOid": coid})
    quote_sized = market and side == "buy"  # a market buy's size is the quote amount to spend
    return (Inbound("POST", "/api/v2/spot/trade/place-order", b"", JSON_CT, body),
            Seen(symbol, side, None if quote_sized else qty, qty if quote_sized else None, price, coid))


@st.composite
def bitstamp(draw: st.DrawFn) -> Case:
    pair, side, qty = draw(st.sampled_from(["btcusd", "ethusd", "ethbtc"])), draw(sides), draw(amounts)
    kind = draw(st.sampled_from(["limit", "market", "instant"]))
    price = draw(amounts) if kind == "limit" else None
    counter = draw(st.booleans()) if kind == "instant" and side == "sell" else False
    coid = draw(_opt(st.text(alphabet="ABCxyz0189-_", min_size=1, max_size=60)))
    path = f"/api/v2/{side}/{pair}/" if kind == "limit" else f"/api/v2/{side}/{kind}/{pair}/"
    body = _form({"amount": qty, "price": price, "amount_in_counter": "True" if counter else None,
                  "client_order_id": coid})
    # Bitstamp: instant buys spend the counter currency; instant sells too with amount_in_counter
    quote_sized = kind == "instant" and (side == "buy" or counter)
    return (Inbound("POST", path, b"", FORM_CT, body.encode()),
            Seen(pair, side, None if quote_sized else qty, qty if quote_sized else None, price, coid))


@st.composite
def bitfinex(draw: st.DrawFn) -> Case:
    symbol, side, qty = draw(st.sampled_from(["tBTCUSD", "tETHUSD", "tTESTBTC:TESTUSD"])), draw(sides), draw(amounts)
    market = draw(st.booleans())
    price = None if market else draw(amounts)
    cid = draw(_opt(st.integers(min_value=1, max_value=2**45 - 1)))  # MAX_CID is exclusive
    obj: dict[str, Any] = {"type": "EXCHANGE MARKET" if market else "EXCHANGE LIMIT", "symbol": symbol,
                           "amount": qty if side == "buy" else f"-{qty}", "price": price, "cid": cid}
    return (Inbound("POST", "/v2/auth/w/order/submit", b"", JSON_CT, _json(obj)),
            Seen(symbol, side, qty, None, price, None if cid is None else str(cid)))


@st.composite
def kraken(draw: st.DrawFn) -> Case:
    pair, side, qty = draw(st.sampled_from(["XBTUSD", "XXBTZUSD", "ETHUSD"])), draw(sides), draw(amounts)
    market = draw(st.booleans())
    viqc = market and draw(st.booleans())
    price = None if market else draw(amounts)
    coid = draw(_opt(ids36))
    body = _form({"pair": pair, "type": side, "ordertype": "market" if market else "limit", "volume": qty,
                  "price": price, "oflags": "viqc" if viqc else None, "cl_ord_id": coid})
    return (Inbound("POST", "/0/private/AddOrder", b"", FORM_CT, body.encode()),
            Seen(pair, side, None if viqc else qty, qty if viqc else None, price, coid))


@st.composite
def coinbase(draw: st.DrawFn) -> Case:
    product, side, qty = draw(st.sampled_from(["BTC-USD", "ETH-USD", "SOL-USDC"])), draw(sides), draw(amounts)
    kind = draw(st.sampled_from(["limit", "market_base", "market_quote"]))
    price = draw(amounts) if kind == "limit" else None
    coid = draw(st.text(alphabet="ABCxyz0189._:-", min_size=1, max_size=128))
    if kind == "limit":
        config: dict[str, Any] = {"limit_limit_gtc": {"base_size": qty, "limit_price": price}}
    else:
        config = {"market_market_ioc": {"quote_size" if kind == "market_quote" else "base_size": qty}}
    body = _json({"client_order_id": coid, "product_id": product, "side": side.upper(),
                  "order_configuration": config})
    quote_sized = kind == "market_quote"
    return (Inbound("POST", "/api/v3/brokerage/orders", b"", JSON_CT, body),
            Seen(product, side, None if quote_sized else qty, qty if quote_sized else None, price, coid))


@st.composite
def deribit(draw: st.DrawFn) -> Case:
    inst = draw(st.sampled_from(["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC_USDC-PERPETUAL", "BTC-27JUN25-50000-C"]))
    side, qty = draw(sides), draw(amounts)
    market = draw(st.booleans())
    price = None if market else draw(amounts)
    label = draw(_opt(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                              max_size=64)))
    query = _form({"instrument_name": inst, "amount": qty, "type": "market" if market else "limit",
                   "price": price, "label": label})
    # Deribit's amount is the order's own quantity (USD on inverse contracts, coin on linear
    # ones: the notional comes from the instrument, read from the exchange)
    return (Inbound("GET", f"/api/v2/private/{side}", query.encode(), (), b""),
            Seen(inst, side, qty, None, price, label))


# ---------------------------------------------------------------- reading the signed request


def _query(out: Outbound) -> dict[str, str]:
    return _unique(parse_qsl(urlsplit(out.path_and_query).query, keep_blank_values=True))


def _unique(pairs: list[tuple[str, str]]) -> dict[str, str]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"a parameter is sent twice: {keys}"
    return dict(pairs)


def _form_body(out: Outbound) -> dict[str, str]:
    return _unique(parse_qsl(out.body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(out.body)))


def _json_body(out: Outbound) -> dict[str, Any]:
    obj = json.loads(out.body, object_pairs_hook=lambda p: _unique(list(p)), parse_float=str)
    assert isinstance(obj, dict)
    return obj


def read_binance(out: Outbound) -> Seen:
    query, body = _query(out), _form_body(out)
    assert not set(query) & set(body) - {"signature"}, "a parameter in both query and body"
    p = {**body, **query}  # BIN-REST: the query string wins
    quote_sized = "quoteOrderQty" in p
    return Seen(p["symbol"], p["side"].lower(), p.get("quantity"), p.get("quoteOrderQty") if quote_sized else None,
                p.get("price"), p.get("newClientOrderId"))


def read_bybit(out: Outbound) -> Seen:
    p = _json_body(out)
    quote_sized = p["category"] == "spot" and p["orderType"] == "Market" and (
        p.get("marketUnit") == "quoteCoin" or ("marketUnit" not in p and p["side"] == "Buy"))
    return Seen(p["symbol"], p["side"].lower(), None if quote_sized else p["qty"],
                p["qty"] if quote_sized else None, p.get("price"), p.get("orderLinkId"))


def read_okx(out: Outbound) -> Seen:
    p = _json_body(out)
    market_spot = p["ordType"] == "market" and p["instId"].count("-") == 1
    target = p.get("tgtCcy") or ("quote_ccy" if p["side"] == "buy" else "base_ccy")
    quote_sized = market_spot and target == "quote_ccy"
    return Seen(p["instId"], p["side"], None if quote_sized else p["sz"], p["sz"] if quote_sized else None,
                p.get("px"), p.get("clOrdId"))


def read_bitget(out: Outbound) -> Seen:
    p = _json_body(out)
    quote_sized = p["orderType"] == "market" and p["side"] == "buy"
    return Seen(p["symbol"], p["side"], None if quote_sized else p["size"], p["size"] if quote_sized else None,
                p.get("price"), p.get("clientOid"))


def read_bitstamp(out: Outbound) -> Seen:
    parts = urlsplit(out.path_and_query).path.strip("/").split("/")  # api v2 side [kind] pair
    side, pair = parts[2], parts[-1]
    kind = parts[3] if len(parts) == 5 else "limit"
    p = _form_body(out)
    quote_sized = kind == "instant" and (side == "buy" or p.get("amount_in_counter") in ("True", "true", "1"))
    return Seen(pair, side, None if quote_sized else p["amount"], p["amount"] if quote_sized else None,
                p.get("price"), p.get("client_order_id"))


def read_bitfinex(out: Outbound) -> Seen:
    p = _json_body(out)
    amount = p["amount"]
    side = "sell" if amount.startswith("-") else "buy"
    return Seen(p["symbol"], side, amount.removeprefix("-"), None, p.get("price"),
                None if p.get("cid") is None else str(p["cid"]))


def read_kraken(out: Outbound) -> Seen:
    p = _form_body(out)
    viqc = "viqc" in p.get("oflags", "").split(",")
    return Seen(p["pair"], p["type"], None if viqc else p["volume"], p["volume"] if viqc else None,
                p.get("price"), p.get("cl_ord_id"))


def read_coinbase(out: Outbound) -> Seen:
    p = _json_body(out)
    ((_, config),) = p["order_configuration"].items()
    return Seen(p["product_id"], p["side"].lower(), config.get("base_size"), config.get("quote_size"),
                config.get("limit_price"), p["client_order_id"])


def read_deribit(out: Outbound) -> Seen:
    assert out.method == "GET" and out.body == b""
    p = _query(out)
    side = urlsplit(out.path_and_query).path.rsplit("/", 1)[1]
    return Seen(p["instrument_name"], side, p["amount"], None, p.get("price"), p.get("label"))


EXCHANGES: dict[str, tuple[st.SearchStrategy[Case], Callable[[Outbound], Seen]]] = {
    "binance": (binance(), read_binance), "bybit": (bybit(), read_bybit), "okx": (okx(), read_okx),
    "bitget": (bitget(), read_bitget), "bitstamp": (bitstamp(), read_bitstamp),
    "bitfinex": (bitfinex(), read_bitfinex), "kraken": (kraken(), read_kraken),
    "coinbase": (coinbase(), read_coinbase), "deribit": (deribit(), read_deribit),
}


def render(prepared: Prepared) -> Inbound:
    """The canonical request as a bot would send it (no authentication)."""
    headers = (("content-type", prepared.content_type),) if prepared.content_type else ()
    return Inbound(prepared.method, prepared.path, prepared.query.encode(), headers, prepared.body)


@pytest.mark.parametrize("exchange", list(EXCHANGES))
@settings(max_examples=150, deadline=None)
@given(data=st.data(), now_ms=st.integers(min_value=1_700_000_000_000, max_value=1_900_000_000_000),
       nonce_extra=st.integers(min_value=0, max_value=10**6), unique=st.uuids(version=4))
def test_property_on_every_exchange_what_was_checked_is_what_is_sent(
    exchange: str, data: st.DataObject, now_ms: int, nonce_extra: int, unique: Any,
) -> None:
    strategy, read = EXCHANGES[exchange]
    inbound, generated = data.draw(strategy)
    ex = module(exchange)
    prepared = ex.prepare(inbound)  # every generated order is valid: a refusal here is a failure
    assert len(prepared.intents) == 1
    checked = from_intent(prepared.intents[0])
    assert checked == generated

    stamp = Stamp(now_ms=now_ms, nonce=now_ms * 1000 + nonce_extra, unique=str(unique))
    out = ex.sign(prepared, CREDS[exchange], stamp, HOSTS[exchange])
    assert urlsplit(out.path_and_query).path == urlsplit(prepared.path).path
    assert read(out) == checked

    again = ex.prepare(render(prepared))
    assert (again.method, again.path, again.query, again.body, again.intents) == (
        prepared.method, prepared.path, prepared.query, prepared.body, prepared.intents)
