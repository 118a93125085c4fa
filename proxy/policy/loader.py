"""Load and validate policy files. Messages read ``file: where: problem; use X``.

One declarative schema (:mod:`proxy.policy.schema`: keys, types, defaults, ranges), strict
and versioned (``version = 1``): an unknown key is an error, not a no-op, because a misspelt
cap that is silently ignored is a cap that does not exist. Every problem in every file is
reported at once so a risk manager fixes them in one pass.
Files named ``*.tests.toml`` are policy test files (see :mod:`proxy.policy.testing`), not policies.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from proxy.errors import PolicyError
from proxy.policy import schema
from proxy.policy.model import Budget, ClientPolicy, PolicySet

TEST_SUFFIX = ".tests.toml"


def policy_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.toml") if not p.name.endswith(TEST_SUFFIX))


def dir_digest(directory: Path) -> str:
    """A digest of every policy file's name and bytes: equal digests, equal policy sets."""
    digest = hashlib.sha256()
    for file in policy_files(directory):
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def load_dir(directory: Path, known_accounts: set[str] | None = None) -> PolicySet:
    """Load every policy ``*.toml`` in ``directory``; raise PolicyError listing every problem."""
    if not directory.is_dir():
        raise PolicyError([f"{directory}: not a directory; create it or fix policies.dir"])
    problems: list[str] = []
    clients: dict[str, ClientPolicy] = {}
    digest = hashlib.sha256()
    for file in policy_files(directory):
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
                f"{clients[policy.client].source}; use one file per client"
            )
            continue
        clients[policy.client] = policy
    problems.extend(_account_budget_conflicts(clients))
    if problems:
        raise PolicyError(problems)
    return PolicySet(clients, version=digest.hexdigest()[:16])


def _account_budget_conflicts(clients: dict[str, ClientPolicy]) -> list[str]:
    """A per-account budget is shared by every client of the account, so every file that
    declares one for the same account and window must agree on its limits."""
    seen: dict[tuple[str, int], tuple[Budget, str]] = {}
    problems: list[str] = []
    for policy in clients.values():
        for grant in policy.grants:
            for budget in grant.budgets:
                if budget.per != "account":
                    continue
                key = (grant.account, budget.window_s)
                if key not in seen:
                    seen[key] = (budget, grant.source)
                    continue
                other, where = seen[key]
                if (other.max_notional, other.max_orders) != (budget.max_notional, budget.max_orders):
                    problems.append(
                        f"{grant.source}.budgets: the per-account budget for {grant.account} over "
                        f"{budget.window} differs from the one in {where}; use the same limits in both "
                        "(or per = \"client\")"
                    )
    return problems

def parse_file(file: Path, data: bytes, known_accounts: set[str] | None = None) -> ClientPolicy:
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError([f"{file}: toml: not valid TOML ({exc}); use TOML 1.0 syntax"]) from None
    return schema.parse(file, raw, known_accounts)
