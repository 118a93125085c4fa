"""Deribit (``/api/v2``), per-request signature ("Deribit Signature Credentials (HTTP REST)").

Auth flow (docs/exchanges.md §9): every private request carries
``Authorization: deri-hmac-sha256 id=ClientId,ts=ms,sig=hex,nonce=N`` with
``sig = hex(HMAC-SHA256(ClientSecret, ts\\nnonce\\nMETHOD\\nURI\\nBody\\n))``, so no access token
ever exists and the bot never holds a credential. ``public/auth`` and the other
token-issuing methods are endpoint_forbidden. Private calls are ``GET /api/v2/private/<m>?q``
as ccxt sends them; JSON-RPC POST is not accepted (refused, not guessed). The nonce is
``Stamp.unique`` as 32 hex characters (single use, as Deribit requires; no ordering, so a key
has no nonce throughput limit); ``ts`` is ``Stamp.now_ms`` (valid 60 s at Deribit).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.errors import BadRequest, InstrumentError
from proxy.exchanges.base import (
    Catalogue,
    Credentials,
    Environment,
    NonceUnit,
    drop_keys,
    encode_pairs,
    endpoint,
    instrument_answer,
    parse_pairs,
    reject_unused_body,
)
from proxy.exchanges.base import (
    require_secret as _require,
)
from proxy.exchanges.capabilities import Capabilities
from proxy.exchanges.client_order_ids import (
    Lookup,
    inbound_with,
    lookup_inbound,
    pair_appended,
)
from proxy.exchanges.deribit.capabilities import CAPABILITIES, CLIENT_ORDER_ID_RULES, lookup_result
from proxy.model.decimals import parse_decimal
from proxy.model.request import (
    Action,
    Category,
    Endpoint,
    Inbound,
    Instrument,
    Intent,
    Outbound,
    Prepared,
    Stamp,
)
from proxy.model.sensitive import Secret
from proxy.model.signers import HmacKey, looks_like_pem

P, R, T, C = Category.PUBLIC, Category.READ, Category.TRADE, Category.CANCEL
W, X, A = Category.WITHDRAW, Category.TRANSFER, Category.ADMIN
PUB, PRIV = "/api/v2/public", "/api/v2/private"


def _many(prefix: str, category: Category, names: str) -> list[Endpoint]:
    return [endpoint("GET", f"{prefix}/{n}", category) for n in names.split()]


CATALOGUE = Catalogue([
    *_many(PUB, P, """get_time test status get_currencies get_instruments get_instrument
        ticker get_order_book get_order_book_by_instrument_id get_last_trades_by_instrument
        get_last_trades_by_currency get_index_price get_index_price_names
        get_book_summary_by_currency get_book_summary_by_instrument get_contract_size
        get_tradingview_chart_data get_funding_rate_history get_funding_rate_value
        get_historical_volatility get_volatility_index_data get_delivery_prices
        get_funding_chart_data get_mark_price_history get_supported_index_names"""),
    *_many(PRIV, R, """get_account_summary get_account_summaries get_positions get_position
        get_order_state get_order_state_by_label get_open_orders get_open_orders_by_currency
        get_open_orders_by_instrument get_open_orders_by_label get_order_history_by_currency
        get_order_history_by_instrument get_user_trades_by_currency
        get_user_trades_by_instrument get_user_trades_by_order get_user_trades_by_currency_and_time
        get_user_trades_by_instrument_and_time get_margins get_order_margin_by_ids
        get_settlement_history_by_currency get_settlement_history_by_instrument
        get_transaction_log get_trigger_order_history"""),
    endpoint("GET", f"{PRIV}/buy", T, name="order"),
    endpoint("GET", f"{PRIV}/sell", T, name="order"),
    *_many(PRIV, C, """cancel cancel_all cancel_all_by_currency cancel_all_by_instrument
        cancel_all_by_kind_or_type cancel_by_label"""),
    # never: catalogued so that the refusal names the category (unlisted methods are refused too)
    *_many(PRIV, W, "withdraw cancel_withdrawal"),
    *_many(PRIV, X, """submit_transfer_to_subaccount submit_transfer_to_user
        submit_transfer_between_subaccounts cancel_transfer_by_id"""),
    *_many(PRIV, A, """create_api_key remove_api_key reset_api_key change_scope_in_api_key
        enable_api_key disable_api_key change_api_key_name set_api_key_as_default edit_api_key
        list_api_keys create_subaccount remove_subaccount change_subaccount_name
        toggle_subaccount_login set_email_for_subaccount set_password_for_subaccount
        toggle_notifications_from_subaccount add_to_address_book update_in_address_book
        remove_from_address_book get_address_book create_deposit_address logout
        enable_cancel_on_disconnect disable_cancel_on_disconnect"""),
    *_many(PUB, A, "auth exchange_token fork_token"),  # they hand out tokens
])

#: Authentication a bot may have put in the query string; the header is rebuilt from scratch.
AUTH_PARAMS = ("access_token",)

_INSTRUMENT = re.compile(r"[A-Z0-9]{1,10}(?:_[A-Z0-9]{1,10})?(?:-[A-Z0-9]{1,12}){0,3}")
_LABEL = re.compile(r"[\x21-\x7e]{1,64}")
_TYPES = frozenset({
    "limit", "market", "stop_limit", "stop_market", "take_limit", "take_market", "market_limit",
})
_PRICED = frozenset({"limit", "stop_limit", "take_limit"})
_TIFS = frozenset({"good_til_cancelled", "good_til_day", "fill_or_kill", "immediate_or_cancel"})
_BOOLS = ("post_only", "reject_post_only", "reduce_only", "mmp")
_TRIGGERS = frozenset({"index_price", "mark_price", "last_price"})
_ORDER_PARAMS = frozenset({
    "instrument_name", "amount", "type", "label", "price", "time_in_force", "max_show",
    "trigger_price", "trigger", "valid_until", *_BOOLS,
})
#: DRB-DOC "private/buy": a trailing stop's trigger follows the market by ``trigger_offset``,
#: and ``advanced`` makes an option's price USD or implied volatility: prices the policy
#: cannot check, so refused.
_SELF_PRICING = ("trigger_offset", "advanced")
_TRIGGERED = frozenset({"stop_limit", "stop_market", "take_limit", "take_market"})


@dataclass(frozen=True)
class Deribit:
    """Deribit. Window-based: ``ts`` within 60 s and a single-use random nonce."""

    name: str = "deribit"
    nonce_unit: NonceUnit | None = None

    @property
    def capabilities(self) -> Capabilities:
        """What generic code may ask of Deribit: the "capabilities" section below."""
        return CAPABILITIES

    def base_url(self, environment: Environment) -> str:
        return {"live": "https://www.deribit.com", "testnet": "https://test.deribit.com"}[
            environment
        ]

    def load_credentials(self, fields: Mapping[str, Secret], version: int) -> Credentials:
        api_key, secret = _require(fields, "api_key"), _require(fields, "api_secret")
        if looks_like_pem(secret):
            raise ValueError(
                "api_secret: Deribit asymmetric keys are not supported; use a client secret "
                "(HMAC) key"
            )
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", api_key.reveal()):
            raise ValueError("api_key: a Deribit client id is letters, digits, '_' and '-'")
        return Credentials(api_key=api_key.reveal(), key=HmacKey(secret), version=version)

    def prepare(self, inbound: Inbound) -> Prepared:
        ep = CATALOGUE.lookup(inbound.method, inbound.raw_path)
        reject_unused_body(inbound)
        query = drop_keys(parse_pairs(inbound.raw_query, "query"), AUTH_PARAMS)
        params = dict(query)
        intents: tuple[Intent, ...] = ()
        if ep.action is Action.PLACE:
            intents = (_order_intent(inbound.raw_path.rsplit("/", 1)[1], params),)
        elif ep.action is Action.CANCEL:
            intents = _cancel_intents(params)
        return Prepared(
            method=inbound.method, path=ep.path, query=encode_pairs(query), body=b"",
            content_type=None, endpoint=ep, intents=intents,
        )

    def with_client_order_id(self, prepared: Prepared, coid: str) -> Prepared:
        """``prepared`` (an order without an id) with the ``label`` added: appended to the
        canonical query string without parsing the order again (``prepare`` keeps the pairs
        in order and reads the label from nowhere else), else by a re-parse."""
        field = CLIENT_ORDER_ID_RULES.field
        fast = pair_appended(prepared, field, coid, to_query=True) if _LABEL.fullmatch(coid) else None
        return fast or self.prepare(inbound_with(prepared, field, coid))

    def order_lookups(self, prepared: Prepared) -> tuple[Prepared, ...]:
        """``get_order_state_by_label?currency=..&label=..`` (the currency from the
        instrument: ``BTC-PERPETUAL`` -> BTC, ``BTC_USDC-PERPETUAL`` -> USDC)."""
        intent = prepared.intents[0]
        assert intent.symbol is not None and intent.client_order_id is not None
        head = intent.symbol.split("-", 1)[0]
        currency = head.split("_", 1)[1] if "_" in head else head
        params = [("currency", currency), ("label", intent.client_order_id)]
        path = "/api/v2/private/get_order_state_by_label"
        return (self.prepare(lookup_inbound("GET", path, params)),)

    def lookup_result(self, status: int, body: bytes) -> Lookup:
        """A JSON-RPC result listing orders with the label: found; an empty list: absent."""
        return lookup_result(status, body)

    def instrument_request(self, symbol: str, market: str) -> Outbound:
        """``GET /api/v2/public/get_instrument?instrument_name=..``."""
        if not _INSTRUMENT.fullmatch(symbol):
            raise InstrumentError("not a Deribit instrument name")
        return Outbound("GET", f"{PUB}/get_instrument?" + encode_pairs([("instrument_name", symbol)]),
                        (), b"")

    def parse_instrument(self, symbol: str, market: str, body: bytes) -> Instrument:
        return parse_instrument(symbol, market, body)

    def sign(self, prepared: Prepared, creds: Credentials, stamp: Stamp, host: str) -> Outbound:
        target = f"{prepared.path}?{prepared.query}" if prepared.query else prepared.path
        if prepared.category is Category.PUBLIC:
            return Outbound(prepared.method, target, (), b"", stamp)
        if not isinstance(creds.key, HmacKey):
            raise TypeError("Deribit signs with a client secret (HMAC)")
        try:
            nonce = uuid.UUID(stamp.unique).hex
        except ValueError:
            raise ValueError("Stamp.unique must be a UUID string for Deribit") from None
        header = authorization(creds.api_key, creds.key, ts=stamp.now_ms, nonce=nonce,
                               method=prepared.method, uri=target, body=b"")
        return Outbound(prepared.method, target, (("Authorization", header),), b"", stamp)


def string_to_sign(ts: int, nonce: str, method: str, uri: str, body: bytes) -> bytes:
    """``Timestamp\\nNonce\\nRequestData`` where RequestData is ``METHOD\\nURI\\nBody\\n``."""
    return f"{ts}\n{nonce}\n{method.upper()}\n{uri}\n".encode() + body + b"\n"


def authorization(
    client_id: str, key: HmacKey, *, ts: int, nonce: str, method: str, uri: str, body: bytes
) -> str:
    """The ``Authorization`` header value, fields in ccxt's order (id, ts, sig, nonce)."""
    sig = key.hexdigest(string_to_sign(ts, nonce, method, uri, body))
    return f"deri-hmac-sha256 id={client_id},ts={ts},sig={sig},nonce={nonce}"


def _instrument(params: Mapping[str, str], required: bool = True) -> str | None:
    name = params.get("instrument_name")
    if name is None:
        if required:
            raise BadRequest("instrument_name: required")
        return None
    if not _INSTRUMENT.fullmatch(name):
        raise BadRequest("instrument_name: use Deribit's name, e.g. BTC-PERPETUAL")
    return name


def _label(params: Mapping[str, str]) -> str | None:
    label = params.get("label")
    if label is not None and not _LABEL.fullmatch(label):
        raise BadRequest("label: 1-64 printable ASCII characters, no spaces")
    return label


def _order_intent(method: str, params: Mapping[str, str]) -> Intent:
    self_pricing = [k for k in _SELF_PRICING if k in params]
    if self_pricing or params.get("type") == "trailing_stop":
        raise BadRequest(f"{self_pricing[0] if self_pricing else 'trailing_stop'}: the exchange "
                         "would set this order's price itself, which the policy cannot check; "
                         "send an absolute price")
    unknown = sorted(set(params) - _ORDER_PARAMS)
    if unknown:
        hint = " (send amount, not contracts)" if unknown[0] == "contracts" else ""
        raise BadRequest(f"{unknown[0]!r} is not an order parameter this proxy understands{hint}")
    instrument = _instrument(params)
    assert instrument is not None
    if "amount" not in params:
        raise BadRequest("amount: required (Deribit's own quantity field)")
    amount = parse_decimal(params["amount"], "amount")
    otype = params.get("type", "limit")
    if otype not in _TYPES:
        raise BadRequest(f"type: use one of {', '.join(sorted(_TYPES))}")
    price = parse_decimal(params["price"], "price") if "price" in params else None
    if otype in _PRICED and price is None:
        raise BadRequest(f"price: required for a {otype} order")
    if otype not in _PRICED and price is not None:
        raise BadRequest(f"price: not allowed on a {otype} order")
    trigger = parse_decimal(params["trigger_price"], "trigger_price") if "trigger_price" in params else None
    if (trigger is None) == (otype in _TRIGGERED):
        raise BadRequest(f"trigger_price: required for {otype} orders, and only for "
                         "stop_* and take_* orders")
    if "max_show" in params:
        parse_decimal(params["max_show"], "max_show")
    if "trigger" in params and params["trigger"] not in _TRIGGERS:
        raise BadRequest(f"trigger: use one of {', '.join(sorted(_TRIGGERS))}")
    if "valid_until" in params and not params["valid_until"].isdigit():
        raise BadRequest("valid_until: milliseconds since the epoch")
    tif = params.get("time_in_force")
    if tif is not None and tif not in _TIFS:
        raise BadRequest(f"time_in_force: use one of {', '.join(sorted(_TIFS))}")
    for name in _BOOLS:
        if name in params and params[name] not in ("true", "false"):
            raise BadRequest(f"{name}: true or false")
    return Intent(
        symbol=instrument, side=method, order_type=otype,
        time_in_force=tif if tif is not None else "good_til_cancelled", quantity=amount,
        price=price, client_order_id=_label(params), prices=(trigger,) if trigger is not None else (),
    )


def parse_instrument(symbol: str, market: str, body: bytes) -> Instrument:
    """One instrument from ``/api/v2/public/get_instrument``. DRB-DOC ``amount``: "For
    perpetual and inverse futures the amount is in USD units. For options and linear futures
    it is the underlying base currency coin": ``instrument_type`` reversed is inverse (1 USD a
    unit of amount), linear and spot count the base coin, options are refused by notional
    rules."""
    data = instrument_answer(body)
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, dict) or result.get("instrument_name") != symbol:
        raise InstrumentError("deribit instrument: the answer is for another instrument")
    if result.get("is_active") is not True:
        raise InstrumentError("deribit instrument: not active")
    kind, style = result.get("kind"), result.get("instrument_type")
    if kind == "option":
        return Instrument(symbol, "option")
    if kind == "spot":
        return Instrument(symbol, "spot")
    if kind == "future" and style == "reversed":
        return Instrument(symbol, "inverse")
    if kind == "future" and style == "linear":
        return Instrument(symbol, "linear")
    raise InstrumentError(f"deribit instrument: kind {kind!r} ({style!r}) has no documented amount unit")


def _cancel_intents(params: Mapping[str, str]) -> tuple[Intent, ...]:
    instrument, label = _instrument(params, required=False), _label(params)
    if instrument is None and label is None:
        return ()
    return (Intent(symbol=instrument, client_order_id=label),)


EXCHANGE = Deribit()
