"""``demo``: the whole system on this machine, narrated (from the development kit)."""

from __future__ import annotations

import argparse
import sys

from proxy.cli.common import EXIT_FAIL, Subparsers


def register(sub: Subparsers) -> None:
    sub.add_parser("demo", help="the whole system on this machine, narrated").set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The demo lives in ``proxy_devkit``, which the serving path never imports."""
    try:
        from proxy_devkit.demo import run_demo
    except ImportError as exc:  # pragma: no cover - the devkit ships in the same distribution
        print(f"error: the demo needs the development kit ({exc}); install it with "
              "pip install '.[demo]'", file=sys.stderr)
        return EXIT_FAIL
    return run_demo()
