"""Load and validate policy files. Messages read ``file: where: problem; use X``.

One declarative schema (:mod:`proxy.policy.schema`: keys, types, defaults, ranges), strict
and versioned (``version = 1``): an unknown key is an error, not a no-op, because a misspelt
cap that is silently ignored is a cap that does not exist. Every problem in every file is
reported at once so a risk manager fixes them in one pass.
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
from pathlib import Path

from proxy.errors import PolicyError
from proxy.policy import schema
from proxy.policy.account_budgets import reconcile_account_budgets
from proxy.policy.model import ClientPolicy, PolicySet

TEST_SUFFIX = ".tests.toml"
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
    return schema.parse(file, raw, known_accounts, warnings)
