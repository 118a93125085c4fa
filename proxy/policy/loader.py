"""Load and validate policy files. Messages read ``file: where: problem; use X``.

The schema is strict and versioned (``version = 1``): an unknown key is an error, not a
no-op, because a misspelt cap that is silently ignored is a cap that does not exist. Every
problem in every file is reported at once so a risk manager fixes them in one pass.
Files named ``*.tests.toml`` are policy test files (see :mod:`proxy.policy.testing`), not policies.

An edit that only takes permissions away is never refused: what it leaves behind that can no
longer apply (caps on a grant without ``trade``, an override for a symbol no longer granted,
an empty list, two per-account budgets that disagree: the lower applies) is a *warning*.
A serving worker loads ``partial``: a file that does not load holds its client (refused
outright) while every other client loads, so no edit ever leaves an older, wider policy in force.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from proxy.errors import PolicyError
from proxy.model.decimals import decimal_from_config
from proxy.model.request import GRANTABLE, NEVER_GRANTABLE, Category
from proxy.policy.account_budgets import reconcile_account_budgets
from proxy.policy.model import (
    SCHEMA_VERSION,
    Budget,
    BudgetScope,
    ClientPolicy,
    Grant,
    Mode,
    PolicySet,
    PriceBand,
    RateLimit,
    SymbolLimits,
)

TEST_SUFFIX = ".tests.toml"
_CLIENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,63}")
_WORD = re.compile(r"[a-z][a-z0-9_ -]{0,31}")
_BAND = re.compile(r"((?:0|[1-9][0-9]{0,5})(?:\.[0-9]{1,6})?)(%|bps)")
_WINDOW = re.compile(r"([1-9][0-9]{0,4})([smhd])")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TOP_KEYS = ("version", "client", "grants", "rate_limit")
_GRANT_KEYS = (
    "account", "allow", "symbols", "sides", "order_types", "time_in_force", "max_order_qty",
    "max_order_notional", "price_band", "per_symbol", "budgets", "mode", "rate_limit",
)
_SYMBOL_KEYS = ("max_order_qty", "max_order_notional", "price_band")
_BUDGET_KEYS = ("per", "window", "max_notional", "max_orders")
MAX_WINDOW_S = 7 * 86400
MAX_RATE_WINDOW_S = 86400
_RATE_EXAMPLE = "use e.g. rate_limit = \"20/second\" or \"20/second; 1000/hour\" (the limits notation)"

Bad = Callable[[str, str], None]


_CLIENT_LINE = re.compile(r'^[ \t]*client[ \t]*=[ \t]*"([A-Za-z0-9][A-Za-z0-9_.-]{0,62})"[ \t]*(?:#.*)?$',
                          re.MULTILINE)


def policy_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.toml") if not p.name.endswith(TEST_SUFFIX))


def dir_digest(directory: Path) -> str:
    """A digest of every policy file's name and bytes: equal digests, equal policy sets."""
    digest = hashlib.sha256()
    for file in policy_files(directory):
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def load_dir(directory: Path, known_accounts: set[str] | None = None, *, partial: bool = False) -> PolicySet:
    """Load every policy ``*.toml`` in ``directory``. Strict (start-up, the CLI): raise
    PolicyError listing every problem. ``partial`` (a serving worker): never raise; a file that
    does not load puts its client in ``held`` and its problems in ``problems``."""
    if not directory.is_dir():
        problem = f"{directory}: not a directory; create it or fix policies.dir"
        if partial:
            return PolicySet(problems=(problem,))
        raise PolicyError([problem])
    problems: list[str] = []
    warnings: list[str] = []
    clients: dict[str, ClientPolicy] = {}
    held: dict[str, str] = {}
    digest = hashlib.sha256()
    for file in policy_files(directory):
        try:
            data = file.read_bytes()
        except OSError as exc:
            problems.append(f"{file}: cannot be read ({exc.strerror}); fix its permissions")
            digest.update(file.name.encode() + b"\0\xff\0")
            continue
        digest.update(file.name.encode() + b"\0" + data + b"\0")
        try:
            policy = parse_file(file, data, known_accounts, warnings)
        except PolicyError as exc:
            problems.extend(exc.problems)
            if exc.client is not None:
                held[exc.client] = str(file)
            continue
        if policy.client in clients or policy.client in held:
            where = clients[policy.client].source if policy.client in clients else held[policy.client]
            problems.append(f"{file}: client: {policy.client!r} also has a policy in {where}; "
                            "use one file per client")
            held[policy.client] = str(file)
            continue
        clients[policy.client] = policy
    for client in held:
        clients.pop(client, None)
    clients = reconcile_account_budgets(clients, warnings)
    if problems and not partial:
        raise PolicyError(problems)
    return PolicySet(clients, version=digest.hexdigest()[:16], held=held, problems=tuple(problems),
                     warnings=tuple(warnings))


def parse_file(
    file: Path, data: bytes, known_accounts: set[str] | None = None, warnings: list[str] | None = None,
) -> ClientPolicy:
    """One policy file; its warnings (see the module doc) are appended to ``warnings``."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        line = _CLIENT_LINE.search(data.decode("utf-8", errors="replace"))
        raise PolicyError([f"{file}: toml: not valid TOML ({exc}); use TOML 1.0 syntax"],
                          line.group(1) if line else None) from None
    problems: list[str] = []
    notes: list[str] = []

    def bad(where: str, problem: str) -> None:
        problems.append(f"{file}: {where}: {problem}")

    def warn(where: str, problem: str) -> None:
        notes.append(f"{file}: {where}: {problem}")

    for key in sorted(set(raw) - set(_TOP_KEYS)):
        bad(key, "unknown key; use version, client, rate_limit and [[grants]]")
    if raw.get("version") != SCHEMA_VERSION or isinstance(raw.get("version"), bool):
        bad("version", f"must be {SCHEMA_VERSION}; use version = {SCHEMA_VERSION}")
    client = raw.get("client")
    named: str | None = client if isinstance(client, str) and _CLIENT.fullmatch(client) else None
    if named is None:
        bad("client", "must name the client; use client = \"momentum-bot\"")
        client = "?"
    grants_raw = raw.get("grants", [])
    if not isinstance(grants_raw, list):
        bad("grants", "must be an array of tables; use [[grants]]")
        grants_raw = []
    grants: list[Grant] = []
    for i, g in enumerate(grants_raw):
        grant = _grant(f"grants[{i}]", g, bad, known_accounts, str(file), warn)
        if grant is None:
            continue
        if any(other.account == grant.account for other in grants):
            bad(f"grants[{i}].account", f"{grant.account!r} is granted twice; use one grant per account")
            continue
        grants.append(grant)
    top = _Problems(bad, warn)
    client_limits = _rate_limits("rate_limit", raw.get("rate_limit"), top)
    if problems:
        raise PolicyError(problems, named)
    if warnings is not None:
        warnings.extend(notes)
    return ClientPolicy(str(client), tuple(grants), source=str(file), rate_limits=client_limits)


def _unknown(where: str, table: dict[str, Any], known: tuple[str, ...], bad: Bad) -> bool:
    extra = sorted(set(table) - set(known))
    for key in extra:
        bad(f"{where}.{key}", f"unknown key; use one of {', '.join(known)}")
    return not extra


def _grant(
    where: str, g: Any, bad: Bad, known_accounts: set[str] | None, file: str, warn: Bad,
) -> Grant | None:
    if not isinstance(g, dict):
        bad(where, "must be a table; use [[grants]]")
        return None
    n = _Problems(bad, warn)
    n.ok &= _unknown(where, g, _GRANT_KEYS, bad)
    account = g.get("account")
    if not isinstance(account, str):
        bad(f"{where}.account", "is required; use the name of an account from the configuration")
        return None
    if known_accounts is not None and account not in known_accounts:
        n.bad(f"{where}.account", f"{account!r} is not an account in the configuration; "
              f"use one of {', '.join(sorted(known_accounts)) or '(none configured)'}")
    allow = _categories(f"{where}.allow", g.get("allow"), n)
    symbols = _strings(f"{where}.symbols", g.get("symbols"), n, _SYMBOL,
                       "exchange symbols such as [\"BTCUSDT\"]", lower=False)
    sides = _strings(f"{where}.sides", g.get("sides"), n, re.compile("buy|sell"), "[\"buy\", \"sell\"]")
    order_types = _strings(f"{where}.order_types", g.get("order_types"), n, _WORD,
                           "the exchange's order types in lower case, e.g. [\"limit\", \"market\"]")
    tifs = _strings(f"{where}.time_in_force", g.get("time_in_force"), n, _WORD,
                    "the exchange's time-in-force values, e.g. [\"gtc\", \"ioc\"]")
    limits = [k for k in ("sides", "order_types", "time_in_force", "max_order_qty", "max_order_notional",
                          "price_band", "per_symbol", "budgets") if g.get(k) is not None]
    if limits and Category.TRADE not in allow and n.ok:
        n.warn(where, f"{', '.join(limits)} set but \"trade\" is not allowed, so they never apply; "
               "remove them (or allow \"trade\")")
    qty = _decimal(f"{where}.max_order_qty", g.get("max_order_qty"), n)
    notional = _decimal(f"{where}.max_order_notional", g.get("max_order_notional"), n)
    band = _band(f"{where}.price_band", g.get("price_band"), n)
    per_symbol = _per_symbol(f"{where}.per_symbol", g.get("per_symbol"), symbols, n)
    budgets = _budgets(f"{where}.budgets", g.get("budgets"), n)
    rate_limits = _rate_limits(f"{where}.rate_limit", g.get("rate_limit"), n)
    mode_raw = g.get("mode", "enforce")
    mode: Mode = "enforce"
    if mode_raw == "report":
        mode = "report"
    elif mode_raw != "enforce":
        n.bad(f"{where}.mode", f"{mode_raw!r} is not a mode; use \"enforce\" or \"report\"")
    if not n.ok:
        return None
    return Grant(
        account=account, allow=allow, symbols=symbols, max_order_qty=qty, max_order_notional=notional,
        sides=sides, order_types=order_types, time_in_force=tifs, price_band=band,
        per_symbol=per_symbol, budgets=budgets, mode=mode, source=f"{file}: {where}",
        rate_limits=rate_limits,
    )


class _Problems:
    """Counts problems for one grant while reporting them (and warnings) to the file's lists."""

    def __init__(self, bad: Bad, warn: Bad) -> None:
        self._bad = bad
        self.warn = warn
        self.ok = True

    def bad(self, where: str, problem: str) -> None:
        self.ok = False
        self._bad(where, problem)


def _categories(where: str, raw: Any, n: _Problems) -> frozenset[Category]:
    if raw is None:
        n.bad(where, "is required; use allow = [\"read\"], [\"read\", \"cancel\"] "
              "or [\"read\", \"trade\", \"cancel\"]")
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        n.bad(where, "must be a list; use allow = [\"read\", \"trade\", \"cancel\"]")
        return frozenset()
    allow: set[Category] = set()
    for item in raw:
        try:
            cat = Category(item)
        except ValueError:
            n.bad(where, f"unknown category {item!r}; use read, trade or cancel")
            continue
        if cat in NEVER_GRANTABLE:
            n.bad(where, f"{item!r} can never be granted; remove it (use read, trade or cancel)")
        elif cat not in GRANTABLE:
            n.bad(where, f"{item!r} needs no grant (public endpoints are open to every grant); remove it")
        elif cat in allow:
            n.bad(where, f"{item!r} is listed twice; use it once")
        else:
            allow.add(cat)
    return frozenset(allow)


def _strings(
    where: str, raw: Any, n: _Problems, pattern: re.Pattern[str], example: str, *, lower: bool = True,
) -> frozenset[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        n.bad(where, f"must be a list of strings; use {example}")
        return None
    if not raw:  # everything removed: nothing passes (a narrowing edit is never refused)
        n.warn(where, "is empty, so nothing passes it; remove \"trade\" (or the grant) to say so plainly")
    values: set[str] = set()
    for s in raw:
        value = s.lower() if lower else s
        if not pattern.fullmatch(value):
            n.bad(where, f"{s[:40]!r} is not valid here; use {example}")
        elif value in values:
            n.bad(where, f"{s[:40]!r} is listed twice; use it once")
        values.add(value)
    return frozenset(values)


def _decimal(where: str, raw: Any, n: _Problems, *, positive: bool = True) -> Decimal | None:
    if raw is None:
        return None
    try:
        value = decimal_from_config(raw, where)
    except ValueError as exc:
        text = str(exc)
        n.bad(where, text.split(": ", 1)[1] if ": " in text else text)
        return None
    if positive and value <= 0:
        n.bad(where, f"{raw!r} must be greater than 0; to forbid trading, remove \"trade\" from allow")
        return None
    return value


def _band(where: str, raw: Any, n: _Problems) -> PriceBand | None:
    if raw is None:
        return None
    m = _BAND.fullmatch(raw) if isinstance(raw, str) else None
    if m is None:
        n.bad(where, f"{raw!r} is not a price band; use a string such as \"2%\" or \"50bps\"")
        return None
    number = Decimal(m.group(1))
    fraction = number / (Decimal(100) if m.group(2) == "%" else Decimal(10000))
    if not Decimal(0) < fraction < Decimal(1):
        n.bad(where, f"{raw!r} must be more than 0 and less than 100%; use e.g. \"2%\"")
        return None
    return PriceBand(fraction, raw)


def _per_symbol(
    where: str, raw: Any, symbols: frozenset[str] | None, n: _Problems,
) -> dict[str, SymbolLimits]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        n.bad(where, "must be tables; use [grants.per_symbol.BTCUSDT]")
        return {}
    out: dict[str, SymbolLimits] = {}
    for symbol, table in raw.items():
        at = f"{where}.{symbol}"
        if not _SYMBOL.fullmatch(symbol):
            n.bad(at, "is not an exchange symbol; use e.g. [grants.per_symbol.BTCUSDT]")
            continue
        if symbols is not None and symbol not in symbols:
            n.warn(at, f"{symbol!r} is not in this grant's symbols, so the override never applies "
                   "(its orders are refused by symbols); remove it")
            continue
        if not isinstance(table, dict) or not table:
            n.bad(at, f"must be a table with at least one of {', '.join(_SYMBOL_KEYS)}")
            continue
        if not _unknown(at, table, _SYMBOL_KEYS, n.bad):
            continue
        out[symbol] = SymbolLimits(
            _decimal(f"{at}.max_order_qty", table.get("max_order_qty"), n),
            _decimal(f"{at}.max_order_notional", table.get("max_order_notional"), n),
            _band(f"{at}.price_band", table.get("price_band"), n),
        )
    return out


def _budgets(where: str, raw: Any, n: _Problems) -> tuple[Budget, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        n.bad(where, "must be an array of tables; use [[grants.budgets]]")
        return ()
    out: list[Budget] = []
    for i, b in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(b, dict):
            n.bad(at, "must be a table; use [[grants.budgets]]")
            continue
        if not _unknown(at, b, _BUDGET_KEYS, n.bad):
            continue
        per = b.get("per")
        if per not in ("client", "account"):
            n.bad(f"{at}.per", "is required; use per = \"client\" (this client on this account) "
                  "or per = \"account\" (every client on this account)")
            continue
        scope: BudgetScope = "client" if per == "client" else "account"
        window = b.get("window")
        m = _WINDOW.fullmatch(window) if isinstance(window, str) else None
        seconds = int(m.group(1)) * _WINDOW_UNITS[m.group(2)] if m else 0
        if m is None or not 1 <= seconds <= MAX_WINDOW_S:
            n.bad(f"{at}.window",
                  f"{window!r} is not a window; use e.g. \"1m\", \"1h\" or \"1d\" (at most 7d)")
            continue
        notional = _decimal(f"{at}.max_notional", b.get("max_notional"), n)
        orders_raw = b.get("max_orders")
        orders: int | None = None
        if orders_raw is not None:
            if isinstance(orders_raw, bool) or not isinstance(orders_raw, int) or orders_raw < 1:
                n.bad(f"{at}.max_orders",
                      f"{orders_raw!r} must be a whole number of orders; use e.g. max_orders = 600")
            else:
                orders = orders_raw
        if notional is None and orders is None and "max_notional" not in b:
            n.bad(at, "sets no limit; use max_notional, max_orders or both")
            continue
        if any(o.per == scope and o.window_s == seconds for o in out):
            n.bad(at, f"a {scope} budget over {window} is already set; use one budget per window "
                  "(put max_notional and max_orders in the same table)")
            continue
        out.append(Budget(scope, str(window), seconds, notional, orders))
    return tuple(out)


def _rate_limits(where: str, raw: Any, n: _Problems) -> tuple[RateLimit, ...]:
    """``rate_limit = "20/second"`` (several with ';'): the limits library's notation."""
    if raw is None:
        return ()
    if not isinstance(raw, str) or not raw.strip():
        n.bad(where, f"must be a string; {_RATE_EXAMPLE}")
        return ()
    from limits import parse_many

    try:
        items = parse_many(raw)
    except ValueError:
        n.bad(where, f"{raw[:60]!r} is not a rate; {_RATE_EXAMPLE}")
        return ()
    out: list[RateLimit] = []
    for item, text in zip(items, (t.strip() for t in re.split(r"[,;|]", raw)), strict=False):
        window = int(item.get_expiry())
        if item.amount < 1:
            n.bad(where, f"{text!r} allows nothing; to refuse a client remove its grant, or {_RATE_EXAMPLE}")
        elif not 1 <= window <= MAX_RATE_WINDOW_S:
            n.bad(where, f"{text!r}: the window must be between 1 second and 1 day; {_RATE_EXAMPLE}")
        elif any(o.window_s == window for o in out):
            n.bad(where, f"{text!r}: two rates over the same window; use one per window")
        else:
            out.append(RateLimit(int(item.amount), window, text))
    return tuple(out)
