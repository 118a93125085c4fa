"""``policy check``: validate every policy file and run the policy test files."""

from __future__ import annotations

import argparse
import sys

from proxy import config as config_mod
from proxy.cli.common import EXIT_CASES_FAILED, EXIT_CONFIG, EXIT_OK, Subparsers, group, with_config
from proxy.errors import PolicyError
from proxy.policy.loader import load_dir


def register(sub: Subparsers) -> None:
    pol = group(sub, "policy", "policies")
    with_config(pol.add_parser(
        "check", help="validate every policy file and run the policy test files",
        description="Validate every policy file in policies.dir, then run every *.tests.toml case "
                    "there through the real exchange modules and the policy.",
        epilog="exit codes: 0 every policy valid and every case passed; 3 an invalid policy or "
               "test file; 4 a failing test case",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )).set_defaults(handler=check)


def check(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.pipeline import accounts as accounts_mod
    from proxy.policy import testing

    try:
        policies = load_dir(cfg.policies_dir, {a.name for a in cfg.accounts})
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        return EXIT_CONFIG
    for warning in policies.warnings:  # leftovers an edit made inert: never an error
        print(f"warning: {warning}")
    print(f"ok: {len(policies.clients)} client policies valid (version {policies.version})", file=sys.stderr)
    exchanges = {a.name: accounts_mod.build(a).exchange for a in cfg.accounts}
    cases: list[testing.Case] = []
    problems: list[str] = []
    for file in testing.find_test_files(cfg.policies_dir):
        try:
            cases.extend(testing.load_cases(file))
        except PolicyError as exc:
            problems.extend(exc.problems)
    if problems:
        for problem in problems:
            print(problem)
        return EXIT_CONFIG
    failed = 0
    for case in cases:
        outcome = testing.run_case(policies, exchanges, case)
        failed += not outcome.passed
        print(testing.describe(outcome))
    print(f"{len(cases) - failed} of {len(cases)} policy test cases passed", file=sys.stderr)
    return EXIT_CASES_FAILED if failed else EXIT_OK
