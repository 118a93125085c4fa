"""Load and validate policy files. Messages read ``file: where: problem; use X``."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

from proxy.decimal_text import decimal_from_config
from proxy.policy.model import ClientPolicy, Grant, PolicySet
from proxy.request_model import GRANTABLE, NEVER_GRANTABLE, Category

_CLIENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_GRANT_KEYS = {"account", "allow", "symbols", "max_order_qty", "max_order_notional"}
_TOP_KEYS = {"version", "client", "grants"}


class PolicyError(ValueError):
    """One or more policy problems, each ``file: where: problem``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_dir(directory: Path, known_accounts: set[str] | None = None) -> PolicySet:
    """Load every ``*.toml`` policy in ``directory``; raise PolicyError listing every problem."""
    if not directory.is_dir():
        raise PolicyError([f"{directory}: not a directory; create it or fix policies.dir"])
    problems: list[str] = []
    clients: dict[str, ClientPolicy] = {}
    digest = hashlib.sha256()
    for file in sorted(directory.glob("*.toml")):
        data = file.read_bytes()
        digest.update(file.name.encode() + b"\0" + data + b"\0")
        try:
            policy = parse_file(file, data, known_accounts)
        except PolicyError as exc:
            problems.extend(exc.problems)
            continue
        if policy.client in clients:
            problems.append(
                f"{file}: client: {policy.client!r} also has a policy in "
                f"{clients[policy.client].source}; keep one file per client"
            )
            continue
        clients[policy.client] = policy
    if problems:
        raise PolicyError(problems)
    return PolicySet(clients, version=digest.hexdigest()[:16])


def parse_file(file: Path, data: bytes, known_accounts: set[str] | None = None) -> ClientPolicy:
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError([f"{file}: not valid TOML: {exc}"]) from None
    problems: list[str] = []

    def bad(where: str, problem: str) -> None:
        problems.append(f"{file}: {where}: {problem}")

    for key in sorted(set(raw) - _TOP_KEYS):
        bad(key, "unknown key; use version, client and [[grants]]")
    if raw.get("version") != 1:
        bad("version", "must be 1; use version = 1")
    client = raw.get("client")
    if not isinstance(client, str) or not _CLIENT.fullmatch(client):
        bad("client", "must name the client, e.g. client = \"momentum-bot\"")
        client = "?"
    grants_raw = raw.get("grants", [])
    if not isinstance(grants_raw, list):
        bad("grants", "use [[grants]] tables")
        grants_raw = []
    grants: list[Grant] = []
    for i, g in enumerate(grants_raw):
        grant = _grant(f"grants[{i}]", g, bad, known_accounts)
        if grant is None:
            continue
        if any(other.account == grant.account for other in grants):
            bad(f"grants[{i}].account", f"{grant.account!r} is granted twice; merge the grants")
            continue
        grants.append(grant)
    if problems:
        raise PolicyError(problems)
    return ClientPolicy(client, tuple(grants), source=str(file))


def _grant(where: str, g: Any, bad: Any, known_accounts: set[str] | None) -> Grant | None:
    if not isinstance(g, dict):
        bad(where, "must be a table")
        return None
    ok = True
    for key in sorted(set(g) - _GRANT_KEYS):
        bad(f"{where}.{key}", f"unknown key; use one of {', '.join(sorted(_GRANT_KEYS))}")
        ok = False
    account = g.get("account")
    if not isinstance(account, str):
        bad(f"{where}.account", "is required; name an account from the configuration")
        return None
    if known_accounts is not None and account not in known_accounts:
        bad(f"{where}.account", f"{account!r} is not an account in the configuration")
        ok = False
    allow_raw = g.get("allow", [])
    allow: set[Category] = set()
    if not isinstance(allow_raw, list) or not all(isinstance(a, str) for a in allow_raw):
        bad(f"{where}.allow", "must be a list such as [\"read\", \"trade\", \"cancel\"]")
        ok = False
        allow_raw = []
    for item in allow_raw:
        try:
            cat = Category(item)
        except ValueError:
            bad(f"{where}.allow", f"unknown category {item!r}; use read, trade or cancel")
            ok = False
            continue
        if cat in NEVER_GRANTABLE:
            bad(f"{where}.allow", f"{item!r} can never be granted; remove it")
            ok = False
        elif cat not in GRANTABLE:
            bad(f"{where}.allow", f"{item!r} needs no grant (public endpoints are open to every grant)")
            ok = False
        else:
            allow.add(cat)
    symbols_raw = g.get("symbols")
    symbols: frozenset[str] | None = None
    if symbols_raw is not None:
        if not isinstance(symbols_raw, list) or not all(isinstance(s, str) and s for s in symbols_raw):
            bad(f"{where}.symbols", "must be a list of exchange symbols such as [\"BTCUSDT\"]")
            ok = False
        else:
            symbols = frozenset(symbols_raw)
    caps = {}
    for key in ("max_order_qty", "max_order_notional"):
        if key in g:
            try:
                caps[key] = decimal_from_config(g[key], f"{where}.{key}")
            except ValueError as exc:
                problems_text = str(exc)
                bad(problems_text.split(": ", 1)[0], problems_text.split(": ", 1)[1])
                ok = False
    if not ok:
        return None
    return Grant(
        account=account, allow=frozenset(allow), symbols=symbols,
        max_order_qty=caps.get("max_order_qty"), max_order_notional=caps.get("max_order_notional"),
        source=where,
    )
