"""``audit verify|query|tail|export|prune``: reading, proving and pruning the trail."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy import config as config_mod
from proxy.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    Subparsers,
    group,
    parse_duration,
    source,
    with_config,
)


def register(sub: Subparsers) -> None:
    aud = group(sub, "audit", "the audit trail")
    av = with_config(aud.add_parser("verify", help="check the trail's integrity"))
    av.add_argument("dir", nargs="?", type=Path)
    aq = with_config(aud.add_parser("query", help="matching records as JSON lines"))
    aq.add_argument("dir", nargs="?", type=Path)
    for flag in ("client", "account", "since", "until", "symbol", "request-id"):
        aq.add_argument(f"--{flag}")
    aq.add_argument("--decision", choices=["allow", "deny"])
    aq.add_argument("--format", choices=["json", "table"], default="json")
    _review_commands(aud)
    av.set_defaults(handler=verify)
    aq.set_defaults(handler=query)


def _audit_filters(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("dir", nargs="?", type=Path, help="the audit directory (default: audit.dir)")
    for flag in ("client", "account", "since", "until", "symbol", "request-id"):
        sp.add_argument(f"--{flag}")
    sp.add_argument("--decision", choices=["allow", "deny"])


def _review_commands(aud: Subparsers) -> None:
    """``audit tail``, ``audit export`` and ``audit prune`` (issue 6)."""
    at = with_config(aud.add_parser(
        "tail", help="the last records, and with -f new ones from every writer",
        description="Print the last N matching records as JSON lines (or a table); with -f keep "
                    "printing new records from every worker until Ctrl-C or SIGTERM. Keyless: "
                    "run `audit verify` for proof.",
    ))
    _audit_filters(at)
    at.add_argument("-n", "--lines", type=int, default=20, help="how many records (default 20)")
    at.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    at.add_argument("--format", choices=["json", "table"], default="json")
    ae = with_config(aud.add_parser(
        "export", help="matching records as CSV",
        description="Write matching records as CSV (intent.* flattened into columns; cells a "
                    "spreadsheet would run as a formula are prefixed with ').",
    ))
    _audit_filters(ae)
    ae.add_argument("--csv", action="store_true", required=True, help="CSV (the one format)")
    ae.add_argument("--output", type=Path, help="write to this file (mode 0600), not stdout")
    ae.add_argument("--verify", action="store_true",
                    help="verify the trail with the chain key first and refuse a failing one")
    ap = with_config(aud.add_parser(
        "prune", help="retention: delete old sealed segments behind a MACed tombstone",
        description="Delete each chain's oldest sealed segments last written more than "
                    "--older-than ago. Refuses a trail that fails verify; what remains still "
                    "verifies. Needs the chain key (Vault).",
    ))
    ap.add_argument("dir", nargs="?", type=Path, help="the audit directory (default: audit.dir)")
    ap.add_argument("--older-than", type=parse_duration, required=True, help="e.g. 90d")
    ap.add_argument("--dry-run", action="store_true", help="list what would go; change nothing")
    at.set_defaults(handler=tail)
    ae.set_defaults(handler=export)
    ap.set_defaults(handler=prune)


def _audit_key(cfg: config_mod.Config) -> Any:
    from proxy.keys.proxy_keys import AUDIT_CHAIN

    return source(cfg).read(cfg.vault.own(AUDIT_CHAIN)).fields["key"]


def verify(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.audit import reader

    report = reader.verify(args.dir or cfg.audit_dir, _audit_key(cfg))
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAIL


def _when(text: str | None, flag: str) -> datetime | None:
    """RFC 3339 / ISO 8601 time for --since/--until; a bare date means its midnight UTC."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        print(f"error: {flag} {text!r}: use RFC 3339, e.g. 2026-11-21T13:00:00Z", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _filters(args: argparse.Namespace) -> Any:
    from proxy.audit import reader

    return reader.Filters(
        client=args.client, account=args.account, since=_when(args.since, "--since"),
        until=_when(args.until, "--until"),
        decision=args.decision, symbol=args.symbol, request_id=args.request_id,
    )


def query(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.audit import reader

    records = reader.query(args.dir or cfg.audit_dir, _filters(args))
    if args.format == "table":
        print(reader.format_table(list(records)))
    else:
        for record in records:
            print(json.dumps(record, sort_keys=True))
    return EXIT_OK


def _audit_dir(cfg: config_mod.Config, args: argparse.Namespace) -> Path | None:
    directory: Path = args.dir or cfg.audit_dir
    if not directory.is_dir():
        print(f"error: {directory} is not an audit directory; check audit.dir in {cfg.path} "
              "or pass DIR", file=sys.stderr)
        return None
    return directory


def tail(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    import signal

    from proxy.audit import review

    directory = _audit_dir(cfg, args)
    if directory is None:
        return EXIT_USAGE
    if args.lines < 0:
        print("error: -n must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    if args.follow and args.format == "table":
        print("error: -f prints JSON lines; use --format table without -f", file=sys.stderr)
        return EXIT_USAGE
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopping.append(signum)

    if args.follow:  # Ctrl-C and SIGTERM end the follow loop cleanly (exit 0)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
    records = review.tail(directory, _filters(args), args.lines, keep_following=args.follow,
                          stop=lambda: bool(stopping))
    if args.format == "table":
        print(review.format_table(list(records)))
        return EXIT_OK
    try:
        for line in review.json_lines(records):
            print(line, flush=True)
    except BrokenPipeError:  # `| head`: the reader left
        sys.stderr.close()
    return EXIT_OK


def export(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.audit import reader

    directory = _audit_dir(cfg, args)
    if directory is None:
        return EXIT_USAGE
    if args.verify:  # before the first byte, so a failing trail exports nothing
        report = reader.verify(directory, _audit_key(cfg))
        if not report.ok:
            print(f"error: the audit trail failed verification: {report.first_bad}; "
                  "nothing exported", file=sys.stderr)
            return EXIT_FAIL
    records = reader.query(directory, _filters(args))
    if args.output is None:
        count = reader.export_csv(records, sys.stdout)
    else:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when the file already existed
        with open(fd, "w", newline="", encoding="utf-8") as out:
            count = reader.export_csv(records, out)
    note = " from a verified trail" if args.verify else ""
    print(f"exported {count} records{note}", file=sys.stderr)
    return EXIT_OK


def prune(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.audit import retention
    from proxy.errors import AuditIntegrityError

    directory = _audit_dir(cfg, args)
    if directory is None:
        return EXIT_USAGE
    try:
        result = retention.prune(directory, _audit_key(cfg), older_than_s=args.older_than,
                                 dry_run=args.dry_run)
    except AuditIntegrityError as exc:
        print(f"error: {exc}; nothing was deleted. Investigate with `audit verify` first.",
              file=sys.stderr)
        return EXIT_FAIL
    for name in result.removed:
        print(name)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(result.removed)} sealed segments older than {args.older_than}s "
          f"({result.tombstones} tombstones{' to write' if args.dry_run else ' written'}); "
          "what remains still verifies", file=sys.stderr)
    return EXIT_OK
