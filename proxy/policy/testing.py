"""Policy test files: cases a risk manager writes to prove a policy before it goes live.

A ``*.tests.toml`` file next to the policies lists requests as a bot would send them and the
decision expected. Each case runs through the real exchange module's ``prepare`` and the pure
``evaluate``, in the same order as the proxy (grant, canonicalisation, policy, budgets), with
reference prices, kill switches and budget usage given in the file. See policies/README.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from proxy.errors import PolicyError, Refusal
from proxy.exchanges.base import Exchange
from proxy.model.decimals import decimal_from_config
from proxy.model.request import Inbound, Instrument
from proxy.policy.evaluate import EvalContext, evaluate
from proxy.policy.loader import TEST_SUFFIX
from proxy.policy.model import PolicySet

_TOP_KEYS = ("version", "reference_prices", "instruments", "cases")
_KINDS = ("spot", "linear", "inverse", "option")
_CASE_KEYS = (
    "name", "client", "account", "method", "path", "query", "body", "content_type", "kill",
    "budget_usage", "reference_prices", "expect", "rule",
)
_EXPECT = ("allow", "deny", "would_deny")


@dataclass(frozen=True)
class Case:
    file: str
    index: int
    name: str
    client: str
    account: str
    inbound: Inbound
    context: EvalContext
    expect: str
    rule: str | None

    @property
    def where(self) -> str:
        return f"{self.file}: cases[{self.index}] ({self.name})"


@dataclass(frozen=True)
class Outcome:
    case: Case
    decision: str  # allow | deny | would_deny
    rule: str
    message: str

    @property
    def passed(self) -> bool:
        return self.decision == self.case.expect and (self.case.rule is None or self.rule == self.case.rule)


def find_test_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{TEST_SUFFIX}"))


def load_cases(file: Path) -> list[Case]:
    """Parse one test file; PolicyError (``file: where: problem; use X``) if malformed."""
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError([f"{file}: toml: not valid TOML ({exc}); use TOML 1.0 syntax"]) from None
    problems: list[str] = []

    def bad(where: str, problem: str) -> None:
        problems.append(f"{file}: {where}: {problem}")

    for key in sorted(set(raw) - set(_TOP_KEYS)):
        bad(key, "unknown key; use version, [reference_prices] and [[cases]]")
    if raw.get("version") != 1:
        bad("version", "must be 1; use version = 1")
    shared = _prices("reference_prices", raw.get("reference_prices", {}), bad)
    instruments = _instruments(raw.get("instruments", {}), bad)
    cases: list[Case] = []
    raw_cases = raw.get("cases", [])
    if not isinstance(raw_cases, list) or not raw_cases:
        bad("cases", "no cases; use [[cases]] tables")
        raw_cases = []
    for i, c in enumerate(raw_cases):
        case = _case(str(file), i, c, shared, bad)
        if case is not None:
            cases.append(replace(case, context=replace(
                case.context, instruments=instruments.get(case.account, {}))))
    if problems:
        raise PolicyError(problems)
    return cases


def _case(file: str, i: int, c: Any, shared: dict[str, dict[str, Decimal]], bad: Any) -> Case | None:
    where = f"cases[{i}]"
    if not isinstance(c, dict):
        bad(where, "must be a table; use [[cases]]")
        return None
    for key in sorted(set(c) - set(_CASE_KEYS)):
        bad(f"{where}.{key}", f"unknown key; use one of {', '.join(_CASE_KEYS)}")
    strings = {}
    for key in ("name", "client", "account", "method", "path", "expect"):
        value = c.get(key)
        if not isinstance(value, str) or not value:
            bad(f"{where}.{key}", "is required and must be a string")
        strings[key] = value if isinstance(value, str) else ""
    if strings["expect"] and strings["expect"] not in _EXPECT:
        bad(f"{where}.expect", f"{strings['expect']!r}: use \"allow\", \"deny\" or \"would_deny\"")
    optional: dict[str, str | None] = {}
    for key in ("query", "body", "content_type", "rule"):
        value = c.get(key)
        if value is not None and not isinstance(value, str):
            bad(f"{where}.{key}", "must be a string")
            value = None
        optional[key] = value
    kill = c.get("kill", [])
    if isinstance(kill, str):
        kill = [kill]
    if not isinstance(kill, list) or not set(kill) <= {"client", "account"}:
        bad(f"{where}.kill", "use kill = \"client\", \"account\" or both as a list")
        kill = []
    usage = _decimals(f"{where}.budget_usage", c.get("budget_usage", {}), bad)
    prices = dict(shared.get(strings["account"], {}))
    if "reference_prices" in c:
        prices.update(_decimals(f"{where}.reference_prices", c["reference_prices"], bad))
    body = (optional["body"] or "").encode()
    headers: list[tuple[str, str]] = []
    ctype = optional["content_type"]
    if ctype is None and body:
        json_like = body.lstrip()[:1] in (b"{", b"[")
        ctype = "application/json" if json_like else "application/x-www-form-urlencoded"
    if ctype:
        headers.append(("content-type", ctype))
    return Case(
        file=file, index=i, name=strings["name"], client=strings["client"], account=strings["account"],
        inbound=Inbound(strings["method"].upper(), strings["path"], (optional["query"] or "").encode(),
                        tuple(headers), body),
        context=EvalContext(reference_prices=prices, kill_client="client" in kill,
                            kill_account="account" in kill, budget_usage=usage),
        expect=strings["expect"], rule=optional["rule"],
    )


def _decimals(where: str, raw: Any, bad: Any) -> dict[str, Decimal]:
    if not isinstance(raw, dict):
        bad(where, "must be a table of decimal strings")
        return {}
    out = {}
    for key, value in raw.items():
        try:
            out[key] = decimal_from_config(value, f"{where}.{key}")
        except ValueError as exc:
            bad(f"{where}.{key}", str(exc).split(": ", 1)[-1])
    return out


def _prices(where: str, raw: Any, bad: Any) -> dict[str, dict[str, Decimal]]:
    if not isinstance(raw, dict):
        bad(where, "must be a table per account, e.g. [reference_prices.ACCOUNT] BTCUSDT = \"50000\"")
        return {}
    return {account: _decimals(f"{where}.{account}", table, bad) for account, table in raw.items()}


def _instruments(raw: Any, bad: Any) -> dict[str, dict[str, Instrument]]:
    """``[instruments.ACCOUNT] SYMBOL = { kind = "linear", contract_size = "1000" }``: what the
    proxy would read from the exchange's instruments endpoint (absent: unknown, refused)."""
    out: dict[str, dict[str, Instrument]] = {}
    if not isinstance(raw, dict) or not all(isinstance(t, dict) for t in raw.values()):
        bad("instruments", "must be a table per account, e.g. [instruments.ACCOUNT] "
            "\"DOGE-USDT-SWAP\" = { kind = \"linear\", contract_size = \"1000\" }")
        return out
    for account, table in raw.items():
        for symbol, spec in table.items():
            where = f"instruments.{account}.{symbol}"
            if not isinstance(spec, dict) or set(spec) - {"kind", "contract_size"} \
                    or spec.get("kind") not in _KINDS:
                bad(where, f"use {{ kind = one of {', '.join(_KINDS)}, contract_size = \"1\" }}")
                continue
            size = _decimals(where, {"contract_size": spec.get("contract_size", "1")}, bad)
            if "contract_size" in size:
                out.setdefault(account, {})[symbol] = Instrument(symbol, spec["kind"], size["contract_size"])
    return out


def run_case(policies: PolicySet, exchanges: Mapping[str, Exchange], case: Case) -> Outcome:
    """Decide one case as the proxy would (without the network and the state store)."""
    policy = policies.for_client(case.client)
    exchange = exchanges.get(case.account)
    if exchange is None or policy is None or policy.grant_for(case.account) is None:
        return Outcome(case, "deny", "grant", "no such account, or not granted to this client")
    try:
        prepared = exchange.prepare(case.inbound)
    except Refusal as refusal:
        return Outcome(case, "deny", refusal.rule or refusal.code, refusal.message)
    canonical = getattr(exchange, "canonical_symbol", None)
    context = replace(case.context, canonical=canonical) if callable(canonical) else case.context
    decision = evaluate(policies, case.client, case.account, prepared, context)
    if decision.would_deny is not None:
        return Outcome(case, "would_deny", decision.would_deny.rule, decision.would_deny.message)
    return Outcome(case, "allow" if decision.allowed else "deny", decision.rule, decision.message)


def describe(outcome: Outcome) -> str:
    case = outcome.case
    expected = case.expect + (f" ({case.rule})" if case.rule else "")
    got = f"{outcome.decision} ({outcome.rule})"
    if outcome.passed:
        return f"ok   {case.where}: {got}"
    return f"FAIL {case.where}: expected {expected}, got {got}: {outcome.message}"
