"""Hypothesis properties: no order above a cap is ever allowed; canonicalisation is
idempotent; what the policy checked is exactly what is signed and sent."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials
from proxy.exchanges.binance import EXCHANGE as BINANCE
from proxy.model.request import Inbound, Prepared, Stamp
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey
from proxy.policy.evaluate import EvalContext, evaluate
from proxy.policy.loader import parse_file
from proxy.policy.model import PolicySet

POLICY = """
version = 1
client = "bot"

[[grants]]
account = "main"
allow = ["read", "trade", "cancel"]
symbols = ["BTCUSDT", "ETHUSDT"]
max_order_qty = "0.5"
max_order_notional = "25000"

[grants.per_symbol.ETHUSDT]
max_order_qty = "8"
"""
SET = PolicySet({"bot": parse_file(Path("p.toml"), POLICY.encode())})
QTY_CAP = {"BTCUSDT": Decimal("0.5"), "ETHUSDT": Decimal("8")}
FORM = (("content-type", "application/x-www-form-urlencoded"),)
CREDS = Credentials(api_key="k", key=HmacKey(Secret("s" * 64)))

decimals = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("100000"), places=8,
                       allow_nan=False, allow_infinity=False).map(lambda d: format(d.normalize(), "f"))


@st.composite
def orders(draw: st.DrawFn) -> dict[str, str]:
    otype = draw(st.sampled_from(["LIMIT", "MARKET"]))
    params = {"symbol": draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])), "side": draw(st.sampled_from(["BUY", "SELL"])),
              "type": otype}
    if otype == "LIMIT":
        params.update(timeInForce="GTC", quantity=draw(decimals), price=draw(decimals))
    elif draw(st.booleans()):
        params["quantity"] = draw(decimals)
    else:
        params["quoteOrderQty"] = draw(decimals)
    return params


def prepare(params: dict[str, str]) -> Prepared:
    body = "&".join(f"{k}={v}" for k, v in params.items())
    return BINANCE.prepare(Inbound("POST", "/api/v3/order", b"", FORM, body.encode()))


@settings(max_examples=300, deadline=None)
@given(orders(), st.one_of(st.none(), decimals.map(Decimal)))
def test_property_no_order_above_a_cap_is_allowed(params: dict[str, str], ref: Decimal | None) -> None:
    try:
        prepared = prepare(params)
    except BadRequest:
        return
    refs = {params["symbol"]: ref} if ref is not None else {}
    decision = evaluate(SET, "bot", "main", prepared, EvalContext(reference_prices=refs))
    if not decision.allowed:
        return
    qty = Decimal(params["quantity"]) if "quantity" in params else Decimal(params["quoteOrderQty"]) / ref  # type: ignore[operator]
    assert qty <= QTY_CAP[params["symbol"]]
    if "price" in params:
        notional = Decimal(params["quantity"]) * Decimal(params["price"])
    elif "quoteOrderQty" in params:
        notional = Decimal(params["quoteOrderQty"])
    else:
        assert ref is not None, "a base-sized market order was allowed without a reference price"
        notional = Decimal(params["quantity"]) * ref
    assert notional <= Decimal(25000)


junk = st.text(alphabet="0123456789.+-eE, \u0661x", min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(orders(), st.sampled_from(["quantity", "price", "quoteOrderQty"]), junk)
def test_property_canonicalisation_is_idempotent(params: dict[str, str], field: str, value: str) -> None:
    params = {**params, field: value} if field in params else params
    try:
        first = prepare(params)
    except BadRequest:
        return
    again = BINANCE.prepare(Inbound("POST", "/api/v3/order", first.query.encode(), FORM, first.body))
    assert (again.query, again.body, again.intents) == (first.query, first.body, first.intents)
    # a number that was accepted reads the same to the proxy and to any other parser
    for key, text in parse_qsl(first.body.decode()):
        if key in ("quantity", "price", "quoteOrderQty"):
            assert str(Decimal(text)) == text or format(Decimal(text), "f") == text


@settings(max_examples=200, deadline=None)
@given(orders(), st.integers(min_value=1_600_000_000_000, max_value=1_900_000_000_000))
def test_property_what_was_checked_is_what_is_sent(params: dict[str, str], now_ms: int) -> None:
    try:
        prepared = prepare(params)
    except BadRequest:
        return
    out = BINANCE.sign(prepared, CREDS, Stamp(now_ms), "api.binance.com")
    sent = [(k, v) for k, v in parse_qsl(out.body.decode(), keep_blank_values=True)
            if k not in ("timestamp", "signature")]
    checked = parse_qsl(prepared.body.decode(), keep_blank_values=True)
    assert sent == checked
    # byte for byte: the signed body is the checked body with only authentication around it
    assert out.body.startswith(f"timestamp={now_ms}&".encode() + prepared.body + b"&signature=")
