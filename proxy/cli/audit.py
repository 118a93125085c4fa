"""``audit verify|prove|verify-proof|query|tail|export|prune``: reading, proving and pruning the
trail."""

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
    av = aud.add_parser(
        "verify", help="check the trail's integrity",
        description="Check the trail against its signed checkpoints with the public key alone "
                    "(--public-key FILE, or audit-verify in Vault), and, when the Vault token "
                    "can read the chain key, every HMAC link as well.",
        epilog="exit codes: 0 intact; 1 tampering found (the first bad line is named)",
    )
    av.add_argument("dir", nargs="?", type=Path, help="the audit directory (default: audit.dir)")
    _public_key_options(av)
    av.set_defaults(configless=True)
    ap = aud.add_parser(
        "prove", help="a record's inclusion proof against a signed checkpoint",
        description="Print, as JSON lines, each line of REQUEST_ID (its decision and outcome) with "
                    "its Merkle inclusion proof and the signed checkpoint it leads to. Hand it to "
                    "a counterparty: `audit verify-proof` checks it with the public key alone.",
    )
    ap.add_argument("request_id", metavar="REQUEST_ID")
    ap.add_argument("dir", nargs="?", type=Path, help="the audit directory (default: audit.dir)")
    ap.add_argument("--config", type=Path, help="the proxy's TOML configuration")
    ap.add_argument("--witness", type=Path, help="the witness directory (default: audit.witness_dir)")
    ap.set_defaults(configless=True, handler=prove)
    vp = aud.add_parser(
        "verify-proof", help="check an inclusion proof with the public key alone",
        description="Check proofs written by `audit prove` (a file, or - for stdin) against the "
                    "checkpoint public key: no trail, no Vault, no secret needed.",
        epilog="exit codes: 0 every proof holds; 1 one does not",
    )
    vp.add_argument("proof", type=Path, help="the proof file (JSON lines), or - for stdin")
    vp.add_argument("--public-key", type=Path, required=True,
                    help="PEM file with the checkpoint public key(s)")
    vp.set_defaults(configless=True, handler=verify_proof)
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


def _public_key_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--config", type=Path,
                    help="the proxy's TOML configuration (not needed with --public-key and DIR)")
    sp.add_argument("--public-key", type=Path,
                    help="PEM file with the checkpoint public key(s); no Vault access at all")
    sp.add_argument("--witness", type=Path, help="the witness directory (default: audit.witness_dir)")


def _config_for(args: argparse.Namespace, need: str) -> config_mod.Config | None:
    if args.config is not None:
        return config_mod.load(args.config)
    if need:
        print(f"error: {need}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return None


def verify(_: object, args: argparse.Namespace) -> int:
    """Public-key verify always; the HMAC verify too when the chain key is readable."""
    from proxy.audit import checkpoint, reader, signed
    from proxy.errors import CheckpointError

    cfg = _config_for(args, "" if args.public_key and args.dir else
                      "give --config (or --public-key and DIR)")
    directory: Path = args.dir or (cfg.audit_dir if cfg else Path())
    witness_dir = args.witness or (cfg.checkpoints.witness_dir if cfg else None)
    ok = True
    if args.public_key is None and cfg is not None:
        chain_key = _chain_key_if_readable(cfg)
        if chain_key is not None:
            report = reader.verify(directory, chain_key)
            print(report.summary())
            ok = report.ok
    try:
        keys = (checkpoint.public_keys_from_pem(args.public_key.read_bytes()) if args.public_key
                else _published_keys(cfg))
    except (OSError, CheckpointError) as exc:
        print(f"error: the checkpoint public key: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if keys is None:
        print("signed checkpoints: off (audit.checkpoint_signing = \"off\")")
        return EXIT_OK if ok else EXIT_FAIL
    signed_report = signed.verify_signed(directory, keys, witness_dir=witness_dir,
                                         vault_witness=_vault_witnessed(cfg, args, directory))
    print(signed_report.summary())
    return EXIT_OK if ok and signed_report.ok else EXIT_FAIL


def _vault_witnessed(cfg: config_mod.Config | None, args: argparse.Namespace, directory: Path) -> Any:
    """The newest checkpoints kept in Vault KV (audit.witness_vault), unless running keyless."""
    from proxy.audit import layout
    from proxy.keys.audit_witness import read_witnessed

    if cfg is None or args.public_key is not None or not cfg.checkpoints.witness_vault:
        return ()
    return read_witnessed(source(cfg), cfg.vault, layout.read_trail_id_unverified(directory) or "")


def _chain_key_if_readable(cfg: config_mod.Config) -> Any:
    """The HMAC chain key, or None for a token that may not read it (an auditor's)."""
    from proxy.errors import SecretMissing, SecretSourceError, VaultUnreachable
    from proxy.keys.proxy_keys import AUDIT_CHAIN

    try:
        return source(cfg).read(cfg.vault.own(AUDIT_CHAIN)).fields["key"]
    except (SecretMissing, KeyError):
        return None
    except VaultUnreachable:
        raise
    except SecretSourceError:  # denied: an auditor's token reads only the public key
        return None


def _published_keys(cfg: config_mod.Config | None) -> Any:
    from proxy.keys.audit_signing import read_public_keys

    assert cfg is not None
    if cfg.checkpoints.signing == "off":
        return None
    return read_public_keys(source(cfg), cfg)


def prove(_: object, args: argparse.Namespace) -> int:
    from proxy.audit import proofs as proving

    cfg = _config_for(args, "" if args.dir else "give --config (or DIR)")
    directory: Path = args.dir or (cfg.audit_dir if cfg else Path())
    witness_dir = args.witness or (cfg.checkpoints.witness_dir if cfg else None)
    found = proving.prove(directory, args.request_id, witness_dir=witness_dir)
    if not found:
        print(f"error: no checkpointed record of request {args.request_id} in {directory} (none, "
              "or not yet covered by a checkpoint: try again in a few seconds)", file=sys.stderr)
        return EXIT_FAIL
    for line in proving.iter_proof_lines(found):
        print(line.decode())
    return EXIT_OK


def verify_proof(_: object, args: argparse.Namespace) -> int:
    from proxy.audit import checkpoint
    from proxy.errors import CheckpointError

    try:
        keys = checkpoint.public_keys_from_pem(args.public_key.read_bytes())
        data = sys.stdin.buffer.read() if str(args.proof) == "-" else args.proof.read_bytes()
    except (OSError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        print("error: no proof in the input", file=sys.stderr)
        return EXIT_FAIL
    failed = 0
    for n, line in enumerate(lines, start=1):
        try:
            proof = checkpoint.parse_proof(json.loads(line))
            record = checkpoint.verify_proof(proof, keys)
        except (ValueError, CheckpointError) as exc:
            print(f"proof {n}: FAILED: {exc}")
            failed += 1
            continue
        cp = proof.checkpoint
        print(f"proof {n}: OK: line {proof.index} of writer {cp.writer} in trail {cp.trail}, "
              f"under the checkpoint of {cp.size} lines signed {cp.ts} by key {cp.key_id}")
        print(json.dumps({k: v for k, v in record.items() if k != "_mac"}, sort_keys=True))
    return EXIT_FAIL if failed else EXIT_OK


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
