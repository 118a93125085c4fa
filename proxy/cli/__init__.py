"""``python -m proxy``: the operators' commands (CONTRACT.md §1).

Exit codes: 0 success, 1 failure at run time (e.g. Vault unreachable), 2 usage error,
3 invalid configuration or policy (or policy test file), 4 failing policy test cases,
5 ``keys status``: a key is older than ``keys.rotation_warn_days``.
Nothing secret is ever printed, except the bot token that
``token issue`` exists to print.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxy import config as config_mod
from proxy.cli import audit, demo, keys, policy, serve, token
from proxy.cli.common import EXIT_CONFIG, EXIT_FAIL, Parser, parse_duration
from proxy.errors import ConfigError, SecretSourceError

__all__ = ["build_parser", "main", "parse_duration"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m proxy", description="A key-holding signing proxy for exchange APIs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    serve.register(sub)
    demo.register(sub)
    token.register(sub)
    policy.register(sub)
    keys.register(sub)
    audit.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return int(args.handler(args))
        if getattr(args, "configless", False):  # loads the config itself, if it was given one
            return int(args.handler(None, args))
        return int(args.handler(config_mod.load(args.config), args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SecretSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
