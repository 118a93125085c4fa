"""The policy files' schema: one pydantic model per table, each key's type, default and check.

Every check says what to use instead, and pydantic collects every problem of a file, so
``policy check`` reports them all at once. The models describe the file; :func:`parse` turns a
valid one into the policy model (``proxy/policy/model.py``), which evaluation reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from proxy.errors import PolicyError
from proxy.model.decimals import decimal_from_config
from proxy.model.request import GRANTABLE, NEVER_GRANTABLE, Category
from proxy.model.schema import Table, dotted, location, ours
from proxy.model.schema import problem as _bad
from proxy.policy.model import (
    SCHEMA_VERSION,
    Budget,
    BudgetScope,
    ClientPolicy,
    Grant,
    Mode,
    PriceBand,
    RateLimit,
    SymbolLimits,
)
from proxy.policy.rate_notation import SEPARATORS, parse_rates

_CLIENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,63}")
_WORD = re.compile(r"[a-z][a-z0-9_ -]{0,31}")
_BAND = re.compile(r"((?:0|[1-9][0-9]{0,5})(?:\.[0-9]{1,6})?)(%|bps)")
_WINDOW = re.compile(r"([1-9][0-9]{0,4})([smhd])")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_S = 7 * 86400
MAX_RATE_WINDOW_S = 86400
_RATE_EXAMPLE = "use e.g. rate_limit = \"20/second\" or \"20/second; 1000/hour\""



_T = TypeVar("_T")


def _listed_once() -> AfterValidator:
    def check(values: tuple[_T, ...]) -> tuple[_T, ...]:
        seen: set[_T] = set()
        for value in values:
            if value in seen:
                raise _bad(f"{str(value)[:40]!r} is listed twice; use it once")
            seen.add(value)
        return values
    return AfterValidator(check)


def _a_list(example: str) -> BeforeValidator:
    """A list, possibly empty: removing every value is an edit that only takes permissions
    away (nothing passes the rule; ``parse`` warns), never refused."""
    def check(raw: object) -> object:
        if not isinstance(raw, list):
            raise _bad(f"must be a list of strings; use {example}")
        return raw
    return BeforeValidator(check)


def _name(pattern: re.Pattern[str], example: str, *, lower: bool = True) -> BeforeValidator:
    def check(raw: object) -> str:
        if not isinstance(raw, str):
            raise _bad(f"must be a list of strings; use {example}")
        value = raw.lower() if lower else raw
        if not pattern.fullmatch(value):
            raise _bad(f"{raw[:40]!r} is not valid here; use {example}")
        return value
    return BeforeValidator(check)


# Lists of distinct names, each matching a pattern (lower-cased but for symbols).
_SYMBOLS = "exchange symbols such as [\"BTCUSDT\"]"
_SIDES = "[\"buy\", \"sell\"]"
_TYPES = "the exchange's order types in lower case, e.g. [\"limit\", \"market\"]"
_TIFS = "the exchange's time-in-force values, e.g. [\"gtc\", \"ioc\"]"
Symbols = Annotated[tuple[Annotated[str, _name(_SYMBOL, _SYMBOLS, lower=False)], ...],
                    Strict(False), _a_list(_SYMBOLS), _listed_once()]
Sides = Annotated[tuple[Annotated[str, _name(re.compile("buy|sell"), _SIDES)], ...],
                  Strict(False), _a_list(_SIDES), _listed_once()]
OrderTypes = Annotated[tuple[Annotated[str, _name(_WORD, _TYPES)], ...],
                       Strict(False), _a_list(_TYPES), _listed_once()]
TimesInForce = Annotated[tuple[Annotated[str, _name(_WORD, _TIFS)], ...],
                         Strict(False), _a_list(_TIFS), _listed_once()]

_ALLOW_EXAMPLE = "use allow = [\"read\"], [\"read\", \"cancel\"] or [\"read\", \"trade\", \"cancel\"]"


def _allow_list(raw: object) -> object:
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise _bad("must be a list; use allow = [\"read\", \"trade\", \"cancel\"]")
    return raw


def _category(raw: str) -> Category:
    try:
        cat = Category(raw)
    except ValueError:
        raise _bad(f"unknown category {raw!r}; use read, trade or cancel") from None
    if cat in NEVER_GRANTABLE:
        raise _bad(f"{raw!r} can never be granted; remove it (use read, trade or cancel)")
    if cat not in GRANTABLE:
        raise _bad(f"{raw!r} needs no grant (public endpoints are open to every grant); remove it")
    return cat


Allow = Annotated[
    tuple[Annotated[Category, BeforeValidator(_category)], ...],
    Strict(False), BeforeValidator(_allow_list), _listed_once(),
]


def _cap(raw: object) -> Decimal:
    try:
        value = decimal_from_config(raw, "")
    except ValueError as exc:
        raise _bad(str(exc).removeprefix(": ")) from None
    if value <= 0:
        raise _bad(f"{raw!r} must be greater than 0; to forbid trading, remove \"trade\" from allow")
    return value


Cap = Annotated[Decimal, BeforeValidator(_cap)]


def _band(raw: object) -> PriceBand:
    m = _BAND.fullmatch(raw) if isinstance(raw, str) else None
    if m is None:
        raise _bad(f"{raw!r} is not a price band; use a string such as \"2%\" or \"50bps\"")
    number = Decimal(m.group(1))
    fraction = number / (Decimal(100) if m.group(2) == "%" else Decimal(10000))
    if not Decimal(0) < fraction < Decimal(1):
        raise _bad(f"{raw!r} must be more than 0 and less than 100%; use e.g. \"2%\"")
    return PriceBand(fraction, m.group(0))


Band = Annotated[PriceBand, BeforeValidator(_band)]


def _window(raw: object) -> str:
    if not isinstance(raw, str) or not 1 <= _seconds(raw) <= MAX_WINDOW_S:
        raise _bad(f"{raw!r} is not a window; use e.g. \"1m\", \"1h\" or \"1d\" (at most 7d)")
    return raw


def _seconds(window: str) -> int:
    m = _WINDOW.fullmatch(window)
    return int(m.group(1)) * _WINDOW_UNITS[m.group(2)] if m else 0


def _per(raw: object) -> object:
    if raw not in ("client", "account"):
        raise _bad(_PER_REQUIRED)
    return raw


_PER_REQUIRED = ("is required; use per = \"client\" (this client on this account) "
                 "or per = \"account\" (every client on this account)")


def _orders(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise _bad(f"{raw!r} must be a whole number of orders; use e.g. max_orders = 600")
    return raw


def _mode(raw: object) -> object:
    if raw not in ("enforce", "report"):
        raise _bad(f"{raw!r} is not a mode; use \"enforce\" or \"report\"")
    return raw


def _rates(raw: object) -> tuple[RateLimit, ...]:
    """``rate_limit = "20/second"`` (several with ';'): proxy.policy.rate_notation."""
    if not isinstance(raw, str) or not raw.strip():
        raise _bad(f"must be a string; {_RATE_EXAMPLE}")
    try:
        items = parse_rates(raw)
    except ValueError:
        raise _bad(f"{raw[:60]!r} is not a rate; {_RATE_EXAMPLE}") from None
    out: list[RateLimit] = []
    for (amount, window), text in zip(items, (t.strip() for t in SEPARATORS.split(raw)), strict=True):
        if amount < 1:
            raise _bad(f"{text!r} allows nothing; to refuse a client remove its grant, or {_RATE_EXAMPLE}")
        if not 1 <= window <= MAX_RATE_WINDOW_S:
            raise _bad(f"{text!r}: the window must be between 1 second and 1 day; {_RATE_EXAMPLE}")
        if any(o.window_s == window for o in out):
            raise _bad(f"{text!r}: two rates over the same window; use one per window")
        out.append(RateLimit(amount, window, text))
    return tuple(out)


Rates = Annotated[tuple[RateLimit, ...], BeforeValidator(_rates)]




_SYMBOL_TABLE = ("must be a table with at least one of max_order_qty, max_order_notional, price_band; "
                 "use e.g. [grants.per_symbol.BTCUSDT] max_order_qty = \"0.5\"")


class _SymbolFile(Table):
    """``[grants.per_symbol.BTCUSDT]``: overrides of the grant's caps and band."""

    max_order_qty: Cap | None = None
    max_order_notional: Cap | None = None
    price_band: Band | None = None

    @model_validator(mode="after")
    def _something(self) -> _SymbolFile:
        if not self.model_fields_set:
            raise _bad(_SYMBOL_TABLE)
        return self


class _BudgetFile(Table):
    """``[[grants.budgets]]``: a rolling budget."""

    per: Annotated[BudgetScope, BeforeValidator(_per)]
    window: Annotated[str, BeforeValidator(_window)]
    max_notional: Cap | None = None
    max_orders: Annotated[int, BeforeValidator(_orders)] | None = None

    @model_validator(mode="after")
    def _some_limit(self) -> _BudgetFile:
        if self.max_notional is None and self.max_orders is None:
            raise _bad("sets no limit; use max_notional, max_orders or both")
        return self

    def budget(self) -> Budget:
        return Budget(self.per, self.window, _seconds(self.window), self.max_notional, self.max_orders)


def _known_account(account: str, info: ValidationInfo) -> str:
    known: set[str] | None = (info.context or {}).get("accounts")
    if known is not None and account not in known:
        raise _bad(f"{account!r} is not an account in the configuration; "
                   f"use one of {', '.join(sorted(known)) or '(none configured)'}")
    return account


def _per_symbol(raw: object) -> object:
    if not isinstance(raw, dict):
        raise _bad("must be tables; use [grants.per_symbol.BTCUSDT]")
    for symbol in raw:
        if not _SYMBOL.fullmatch(symbol):
            raise _bad(f"{symbol[:40]!r} is not an exchange symbol; use e.g. [grants.per_symbol.BTCUSDT]")
    return raw


class _GrantFile(Table):
    """``[[grants]]``: what the client may do on one account."""

    account: Annotated[str, AfterValidator(_known_account)]
    allow: Allow
    symbols: Symbols | None = None
    sides: Sides | None = None
    order_types: OrderTypes | None = None
    time_in_force: TimesInForce | None = None
    max_order_qty: Cap | None = None
    max_order_notional: Cap | None = None
    price_band: Band | None = None
    per_symbol: Annotated[dict[str, _SymbolFile], BeforeValidator(_per_symbol)] = Field(default_factory=dict)
    budgets: Annotated[tuple[_BudgetFile, ...], Strict(False)] = ()
    mode: Annotated[Mode, BeforeValidator(_mode)] = "enforce"
    rate_limit: Rates = ()

    @model_validator(mode="after")
    def _coherent(self) -> _GrantFile:
        seen: set[tuple[str, int]] = set()
        for i, b in enumerate(self.budgets):
            if (b.per, _seconds(b.window)) in seen:
                raise _bad(f"a {b.per} budget over {b.window} is already set; use one budget per window "
                           "(put max_notional and max_orders in the same table)", f"budgets[{i}]")
            seen.add((b.per, _seconds(b.window)))
        return self

    def leftovers(self, where: str) -> list[str]:
        """What an edit that took permissions away left behind, which can no longer apply:
        warnings, never errors (``where`` is ``file: grants[i]``)."""
        notes: list[str] = []
        limits = [k for k in ("sides", "order_types", "time_in_force", "max_order_qty", "max_order_notional",
                              "price_band", "per_symbol", "budgets")
                  if k in self.model_fields_set and getattr(self, k) not in (None, (), {})]
        if limits and Category.TRADE not in self.allow:
            notes.append(f"{where}: {', '.join(limits)} set but \"trade\" is not allowed, so they never "
                         "apply; remove them (or allow \"trade\")")
        for symbol in self.per_symbol:
            if self.symbols is not None and symbol not in self.symbols:
                notes.append(f"{where}.per_symbol.{symbol}: {symbol!r} is not in this grant's symbols, so "
                             "the override never applies (its orders are refused by symbols); remove it")
        for name in ("symbols", "sides", "order_types", "time_in_force"):
            if getattr(self, name) == ():
                notes.append(f"{where}.{name}: is empty, so nothing passes it; remove \"trade\" (or the "
                             "grant) to say so plainly")
        return notes

    def grant(self, source: str) -> Grant:
        def names(values: tuple[str, ...] | None) -> frozenset[str] | None:
            return frozenset(values) if values is not None else None

        return Grant(
            account=self.account, allow=frozenset(self.allow), symbols=names(self.symbols),
            max_order_qty=self.max_order_qty, max_order_notional=self.max_order_notional,
            sides=names(self.sides), order_types=names(self.order_types),
            time_in_force=names(self.time_in_force), price_band=self.price_band,
            per_symbol={s: SymbolLimits(t.max_order_qty, t.max_order_notional, t.price_band)
                        for s, t in self.per_symbol.items()
                        if self.symbols is None or s in self.symbols},  # else it never applies
            budgets=tuple(b.budget() for b in self.budgets), mode=self.mode, source=source,
            rate_limits=self.rate_limit,
        )


def _version(raw: object) -> object:
    if raw != SCHEMA_VERSION or isinstance(raw, bool):
        raise _bad(f"must be {SCHEMA_VERSION}; use version = {SCHEMA_VERSION}")
    return raw


def _client(raw: object) -> object:
    if not isinstance(raw, str) or not _CLIENT.fullmatch(raw):
        raise _bad("must name the client; use client = \"momentum-bot\"")
    return raw


class _PolicyFile(Table):
    """One policy file: one client's grants."""

    version: Annotated[Literal[1], BeforeValidator(_version)]
    client: Annotated[str, BeforeValidator(_client)]
    grants: Annotated[tuple[_GrantFile, ...], Strict(False)] = ()
    rate_limit: Rates = ()

    @model_validator(mode="after")
    def _one_grant_per_account(self) -> _PolicyFile:
        seen: set[str] = set()
        for i, grant in enumerate(self.grants):
            if grant.account in seen:
                raise _bad(f"{grant.account!r} is granted twice; use one grant per account",
                           f"grants[{i}].account")
            seen.add(grant.account)
        return self


#: what a missing required key needs, by key
_REQUIRED: Mapping[str, str] = {
    "version": f"must be {SCHEMA_VERSION}; use version = {SCHEMA_VERSION}",
    "client": "must name the client; use client = \"momentum-bot\"",
    "account": "is required; use the name of an account from the configuration",
    "allow": f"is required; {_ALLOW_EXAMPLE}",
    "per": _PER_REQUIRED,
    "window": "is required; use e.g. window = \"1m\", \"1h\" or \"1d\" (at most 7d)",
}


def parse(
    file: Path, raw: dict[str, Any], known_accounts: set[str] | None = None,
    warnings: list[str] | None = None,
) -> ClientPolicy:
    """Validate one file's TOML and build its policy; PolicyError lists every problem (and
    names the client when the file does); leftovers of a narrowing edit go to ``warnings``."""
    try:
        policy = _PolicyFile.model_validate(raw, context={"accounts": known_accounts})
    except ValidationError as exc:
        client = raw.get("client")
        named = client if isinstance(client, str) and _CLIENT.fullmatch(client) else None
        raise PolicyError([f"{file}: {_message(e)}" for e in exc.errors(include_url=False)], named) from None
    if warnings is not None:
        for i, g in enumerate(policy.grants):
            warnings.extend(g.leftovers(f"{file}: grants[{i}]"))
    grants = tuple(g.grant(f"{file}: grants[{i}]") for i, g in enumerate(policy.grants))
    return ClientPolicy(policy.client, grants, source=str(file), rate_limits=policy.rate_limit)


def _message(error: Any) -> str:
    """``where: problem; use X`` from one pydantic error, in the file's own terms."""
    loc = location(error)
    if len(loc) > 1 and isinstance(loc[-1], int) and loc[-2] in _NAME_LISTS:
        loc.pop()  # "grants[0].sides", as the file reads, not the item's index
    kind = error["type"]
    if kind == "missing":
        problem = _REQUIRED.get(str(loc[-1]), "is required; see policies/README.md")
    elif kind == "extra_forbidden":
        problem = f"unknown key; use {_keys(loc[:-1])}"
    elif kind in ("model_type", "dict_type"):
        problem = _TABLE.get(_shape(loc), "must be a table; see policies/README.md")
    elif kind in ("tuple_type", "list_type"):
        problem = _ARRAY.get(_shape(loc), "must be an array of tables; see policies/README.md")
    else:
        problem = ours(error) or f"{error['msg']}; see policies/README.md"
    return f"{dotted(loc)}: {problem}"


_NAME_LISTS = frozenset({"allow", "symbols", "sides", "order_types", "time_in_force"})


def _shape(loc: Sequence[str | int]) -> tuple[str, ...]:
    """The schema position of ``loc``: indices and symbols dropped (grants, budgets)."""
    out: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int) or (i > 0 and loc[i - 1] == "per_symbol"):
            continue
        out.append(part)
    return tuple(out)


_MODELS: Mapping[tuple[str, ...], type[Table]] = {
    (): _PolicyFile, ("grants",): _GrantFile, ("grants", "per_symbol"): _SymbolFile,
    ("grants", "budgets"): _BudgetFile,
}
_TABLE: Mapping[tuple[str, ...], str] = {
    ("grants",): "must be a table; use [[grants]]",
    ("grants", "per_symbol"): _SYMBOL_TABLE,
    ("grants", "budgets"): "must be a table; use [[grants.budgets]]",
}
_ARRAY: Mapping[tuple[str, ...], str] = {
    ("grants",): "must be an array of tables; use [[grants]]",
    ("grants", "budgets"): "must be an array of tables; use [[grants.budgets]]",
}


def _keys(table: Sequence[str | int]) -> str:
    model = _MODELS.get(_shape(table))
    if model is _PolicyFile:
        return "version, client, rate_limit and [[grants]]"
    return "one of " + ", ".join(model.model_fields) if model else "the keys in policies/README.md"

