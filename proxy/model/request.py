"""The values that flow through one request: what came in, what it means, what goes out.

Every type here is a frozen dataclass with no behaviour beyond derived properties, so the pure
core (exchange modules, policy) can be tested without any I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal


class Category(enum.StrEnum):
    """What an endpoint does. withdraw, transfer and admin can never be granted."""

    PUBLIC = "public"
    READ = "read"
    TRADE = "trade"
    CANCEL = "cancel"
    WITHDRAW = "withdraw"
    TRANSFER = "transfer"
    ADMIN = "admin"


GRANTABLE = frozenset({Category.READ, Category.TRADE, Category.CANCEL})
NEVER_GRANTABLE = frozenset({Category.WITHDRAW, Category.TRANSFER, Category.ADMIN})


class Action(enum.StrEnum):
    """What an endpoint does in more detail, for intent extraction and idempotency."""

    PLACE = "place"          # places one or more orders
    VALIDATE = "validate"    # checks an order without placing it (policy applies; no budget, no id)
    AMEND = "amend"
    CANCEL = "cancel"
    QUERY = "query"          # reads orders, fills, balances, positions
    PUBLIC = "public"
    FORBIDDEN = "forbidden"  # withdraw/transfer/admin: catalogued only to be refused


@dataclass(frozen=True)
class Endpoint:
    """One catalogued endpoint: method and exact path (or a prefix for parameterised paths)."""

    method: str
    path: str
    category: Category
    action: Action
    name: str = ""
    batch: bool = False


@dataclass(frozen=True)
class Inbound:
    """The bot's request as received, after the ``/x/{account}`` prefix is removed.

    ``raw_path`` is exactly as on the wire (percent-encoding kept) so path tricks can be seen.
    ``headers`` are (lower-case name, value) pairs in arrival order.
    """

    method: str
    raw_path: str
    raw_query: bytes
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return values[0] if values else None


InstrumentKind = Literal["spot", "linear", "inverse", "option"]


@dataclass(frozen=True)
class Instrument:
    """How one instrument's order quantity becomes exposure in its quote (or settlement
    price) currency, as the exchange's instruments endpoint (or its documentation, for spot)
    says.

    ``contract_size`` is what one unit of the order's quantity field is worth: base units for
    spot and linear contracts (e.g. 1,000 DOGE for a DOGE perpetual whose contract is 1,000 DOGE),
    quote units for inverse contracts (e.g. 100 USD a contract, or 1 USD where the order's
    amount is itself in USD). Options have no notional a cap can
    compare without a model, so every notional rule refuses them.
    """

    symbol: str
    kind: InstrumentKind
    contract_size: Decimal = Decimal(1)

    def notional(self, quantity: Decimal, price: Decimal | None) -> Decimal | None:
        """Exposure in quote units; None when it cannot be known (option, or no price)."""
        if self.kind == "option":
            return None
        if self.kind == "inverse":
            return quantity * self.contract_size
        if price is None:
            return None
        return quantity * self.contract_size * price


@dataclass(frozen=True)
class Intent:
    """What an order-shaped request asks for, in the exchange's own units and spelling.

    ``time_in_force`` and ``order_type`` are the effective values (the exchange's default
    applied when the request omits one). ``instrument`` is set when the request alone says
    how its quantity counts (spot); otherwise ``market`` names the exchange's instrument table
    the symbol is in (an instrument type or category) and the proxy reads the instrument
    from the exchange. ``prices`` are every other price the exchange will use for this order
    (trigger, stop, take-profit and stop-loss prices); ``legs`` are the orders it may create
    (attached take-profit/stop-loss, OCO stop), checked like orders.
    """

    symbol: str | None = None
    side: str | None = None              # "buy" | "sell"
    order_type: str | None = None        # lower-case exchange type, e.g. "limit", "market"
    time_in_force: str | None = None
    quantity: Decimal | None = None      # the exchange's own quantity field (base units spot)
    quote_quantity: Decimal | None = None  # quote-sized market orders (spot only)
    price: Decimal | None = None
    client_order_id: str | None = None
    market: str = ""
    instrument: Instrument | None = None
    prices: tuple[Decimal, ...] = ()
    legs: tuple[Intent, ...] = ()

    @property
    def notional(self) -> Decimal | None:
        """Quote value when it follows from the request alone (quote-sized, or a priced order
        on an instrument the request says)."""
        if self.quote_quantity is not None:
            return self.quote_quantity
        if self.quantity is not None and self.instrument is not None:
            return self.instrument.notional(self.quantity, self.price)
        return None


@dataclass(frozen=True)
class Prepared:
    """One canonical request: what policy evaluates is exactly what is signed and sent.

    ``query`` and ``body`` are the canonical encoding, without any authentication; signing
    only adds authentication to them.
    """

    method: str
    path: str
    query: str
    body: bytes
    content_type: str | None
    endpoint: Endpoint
    intents: tuple[Intent, ...] = ()

    @property
    def category(self) -> Category:
        return self.endpoint.category

    @property
    def client_order_id(self) -> str | None:
        ids = [i.client_order_id for i in self.intents if i.client_order_id]
        return ids[0] if len(ids) == 1 else None


@dataclass(frozen=True)
class Stamp:
    """Time and nonce material for one signature, supplied by the caller (the core has no clock).

    ``now_ms`` is exchange-corrected wall time; ``nonce`` is a strictly increasing per-key
    integer for exchanges that need one (else equal to the time in the exchange's unit);
    ``unique`` is a fresh random UUID4 string (36 characters, with hyphens) for exchanges that
    want single-use nonce strings (a nonce header, a signature nonce, a JWT nonce).
    """

    now_ms: int
    nonce: int = 0
    unique: str = ""


@dataclass(frozen=True)
class Outbound:
    """A signed request ready for the wire. Its repr hides every header value."""

    method: str
    path_and_query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stamp: Stamp = field(default_factory=lambda: Stamp(0))

    def __repr__(self) -> str:
        names = ", ".join(k for k, _ in self.headers)
        return f"Outbound({self.method} {self.path_and_query.split('?')[0]}, headers=[{names}])"
