"""``python -m proxy``: the operators' commands (CONTRACT.md §1).

Exit codes: 0 success, 1 failure at run time (e.g. Vault unreachable), 2 usage error,
3 invalid configuration or policy (or policy test file), 4 failing policy test cases,
5 ``keys status``: a key is older than ``keys.rotation_warn_days``.
Nothing secret is ever printed, except the bot token that
``token issue`` exists to print.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy import config as config_mod
from proxy.errors import ConfigError, SecretSourceError
from proxy.policy.loader import PolicyError, load_dir

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG, EXIT_CASES_FAILED = 0, 1, 2, 3, 4
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``Ns``, ``Nm``, ``Nh`` or ``Nd`` -> seconds."""
    m = _DURATION.fullmatch(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: use a duration such as 30s, 15m, 12h or 30d")
    return int(m.group(1)) * _UNITS[m.group(2)]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m proxy", description="A key-holding signing proxy for exchange APIs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", required=True, type=Path, help="the proxy's TOML configuration")
        return sp

    with_config(sub.add_parser("init", help="create the proxy's own keys in Vault (idempotent)"))
    s = with_config(sub.add_parser("serve", help="serve bots and operators"))
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--unsafe-allow-root", action="store_true")
    sub.add_parser("demo", help="the whole system on this machine, narrated")

    tok = sub.add_parser("token", help="bot tokens").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    ti = with_config(tok.add_parser("issue", help="print a bot token on stdout"))
    ti.add_argument("--client", required=True)
    ti.add_argument("--ttl", type=parse_duration, default=None, help="e.g. 30d (default 30d)")
    tr = with_config(tok.add_parser("revoke", help="refuse every token of a client issued until now"))
    tr.add_argument("--client", required=True)

    pol = sub.add_parser("policy", help="policies").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    with_config(pol.add_parser(
        "check", help="validate every policy file and run the policy test files",
        description="Validate every policy file in policies.dir, then run every *.tests.toml case "
                    "there through the real exchange modules and the policy.",
        epilog="exit codes: 0 every policy valid and every case passed; 3 an invalid policy or "
               "test file; 4 a failing test case",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ))
    kill = with_config(sub.add_parser(
        "kill", help="kill switch: refuse everything but cancels for a client or an account",
        description="Set (or with --off clear) a kill switch in the shared state store; every "
                    "worker on every host refuses all but cancels within 1 s.",
    ))
    who = kill.add_mutually_exclusive_group(required=True)
    who.add_argument("--client")
    who.add_argument("--account")
    kill.add_argument("--off", action="store_true", help="clear the kill switch")

    keys = sub.add_parser("keys", help="exchange keys").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    kr = with_config(keys.add_parser("rotate", help="write a new key version read from stdin"))
    kr.add_argument("--account", required=True)
    kr.add_argument("--secret", metavar="PATH",
                    help="which key of a key pool (one of the account's secrets); default: its first")
    with_config(keys.add_parser(
        "status", help="each account's key version and age",
        description="One JSON line per key (every key of a key pool, each with its KV path as "
                    "\"secret\"): key version, creation time and age in days.",
        epilog="exit codes: 0 every key younger than keys.rotation_warn_days (90 by default); "
               "5 a key is past it (rotate it); 1 a secret could not be read",
    ))
    kt = with_config(keys.add_parser(
        "import-transit", help="import a key read from stdin into Vault Transit (signing = \"transit\")",
        description="Read the key as issued (JSON: api_key, api_secret, passphrase) on stdin, import "
                    "api_secret into Vault Transit as a new key or key version, and write api_key "
                    "(and passphrase) to KV without it. Running proxies switch within seconds.",
    ))
    kt.add_argument("--account", required=True)

    aud = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="action", required=True, parser_class=_Parser)
    av = with_config(aud.add_parser("verify", help="check the trail's integrity"))
    av.add_argument("dir", nargs="?", type=Path)
    aq = with_config(aud.add_parser("query", help="matching records as JSON lines"))
    aq.add_argument("dir", nargs="?", type=Path)
    for flag in ("client", "account", "since", "until", "symbol", "request-id"):
        aq.add_argument(f"--{flag}")
    aq.add_argument("--decision", choices=["allow", "deny"])
    aq.add_argument("--format", choices=["json", "table"], default="json")
    _audit_review_commands(aud, with_config)
    return p


def _audit_filters(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("dir", nargs="?", type=Path, help="the audit directory (default: audit.dir)")
    for flag in ("client", "account", "since", "until", "symbol", "request-id"):
        sp.add_argument(f"--{flag}")
    sp.add_argument("--decision", choices=["allow", "deny"])


def _audit_review_commands(aud: Any, with_config: Any) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SecretSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from proxy_devkit.demo import run_demo

        return run_demo()
    cfg = config_mod.load(args.config)
    command = args.command if args.command in ("init", "serve", "kill") else f"{args.command} {args.action}"
    handler = {
        "init": _init, "serve": _serve, "token issue": _token_issue, "token revoke": _token_revoke,
        "policy check": _policy_check, "kill": _kill, "keys rotate": _keys_rotate,
        "keys status": _keys_status, "keys import-transit": _keys_import_transit,
        "audit verify": _audit_verify, "audit query": _audit_query,
        "audit tail": _audit_tail, "audit export": _audit_export, "audit prune": _audit_prune,
    }[command]
    return handler(cfg, args)


def _source(cfg: config_mod.Config):  # type: ignore[no-untyped-def]
    from proxy.keys.vault import VaultSecretSource

    source = VaultSecretSource(cfg.vault)
    source.login()
    return source


def _init(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.keys.proxy_keys import init_keys

    written = init_keys(_source(cfg), cfg.vault)
    for path in written:
        print(f"created {cfg.vault.mount}/{path}", file=sys.stderr)
    if not written:
        print("the proxy's keys already exist; nothing to do", file=sys.stderr)
    return EXIT_OK


def _load_policies(cfg: config_mod.Config):  # type: ignore[no-untyped-def]
    try:
        return load_dir(cfg.policies_dir, {a.name for a in cfg.accounts})
    except PolicyError as exc:
        raise ConfigError(str(cfg.policies_dir), "; ".join(exc.problems)) from None


def _serve(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.server.supervisor import configure_logging, serve

    configure_logging(os.environ.get("PROXY_LOG_LEVEL", "INFO").upper())
    _harden(cfg, allow_root=args.unsafe_allow_root)
    policies = _load_policies(cfg)
    from proxy.errors import VaultUnreachable
    from proxy.keys.proxy_keys import AUDIT_CHAIN, TOKEN_VERIFY

    try:
        source = _source(cfg)
        for name in (TOKEN_VERIFY, AUDIT_CHAIN):
            if not source.exists(cfg.vault.own(name)):
                print(f"error: {cfg.vault.mount}/{cfg.vault.own(name)} is missing; "
                      f"run `python -m proxy init --config {cfg.path}` first", file=sys.stderr)
                return EXIT_CONFIG
    except VaultUnreachable as exc:  # serve anyway: not ready until Vault comes (no restart)
        print(f"warning: {exc}; serving 503 not_ready and retrying until it answers", file=sys.stderr)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    return serve(cfg, policies, args.workers)


def _harden(cfg: config_mod.Config, *, allow_root: bool) -> None:
    """Process hardening at start (no core dumps, umask, root refusal, private files)."""
    from proxy.server import hardening as process_guard

    process_guard.refuse_root(allow_root)
    process_guard.harden_process()
    for path in (cfg.path, cfg.vault.token_file, cfg.vault.role_id_file, cfg.vault.secret_id_file):
        if path is not None:
            process_guard.check_private_file(path)
    for listen in (cfg.server.listen, cfg.server.admin_listen):
        process_guard.check_listen_address(str(listen), cfg.server.allow_non_loopback)


def _token_issue(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.keys.proxy_keys import TOKEN_SIGNING
    from proxy.pipeline import auth as client_auth

    policies = _load_policies(cfg)
    if policies.for_client(args.client) is None:
        print(f"error: no policy names client {args.client!r}; add one to {cfg.policies_dir}",
              file=sys.stderr)
        return EXIT_USAGE
    ttl = args.ttl or cfg.tokens.default_ttl_s
    if ttl > cfg.tokens.max_ttl_s:
        print(f"error: --ttl is longer than tokens.max_ttl_s ({cfg.tokens.max_ttl_s}s)", file=sys.stderr)
        return EXIT_USAGE
    pem = _source(cfg).read(cfg.vault.own(TOKEN_SIGNING)).fields["private_key"]
    token = client_auth.issue(
        pem.reveal(), client=args.client, now=int(time.time()), ttl_s=ttl,
        issuer=cfg.tokens.issuer, audience=cfg.tokens.audience,
    )
    print(token)
    return EXIT_OK


def _token_revoke(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.keys.proxy_keys import revoke_client

    revoke_client(_source(cfg), cfg.vault, args.client, int(time.time()) + 1)
    print(f"revoked every token of {args.client} issued until now; proxies refuse them within "
          "a few seconds. Issue a new token to restore access.", file=sys.stderr)
    return EXIT_OK


def _policy_check(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.pipeline import accounts as accounts_mod
    from proxy.policy import testing

    try:
        policies = load_dir(cfg.policies_dir, {a.name for a in cfg.accounts})
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem)
        return EXIT_CONFIG
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


def _kill(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    import asyncio

    from proxy.errors import NotReady
    from proxy.policy.runtime import kill_flag
    from proxy.state import open_store

    kind, name = ("client", args.client) if args.client else ("account", args.account)
    if kind == "account" and cfg.account(name) is None:
        print(f"error: no account named {name!r} in {cfg.path}", file=sys.stderr)
        return EXIT_USAGE

    async def flip() -> None:
        store = open_store(cfg.state.backend, path=cfg.state.path, url=cfg.state.url,
                           sqlite_synchronous="FULL" if cfg.state.synchronous == "full" else "NORMAL")
        try:
            if args.off:
                await store.clear_flag(kill_flag(kind, name))
            else:
                await store.set_flag(kill_flag(kind, name), f"set {datetime.now(UTC).isoformat()}")
        finally:
            await store.close()

    try:
        asyncio.run(flip())
    except NotReady as exc:
        print(f"error: the state store is unreachable ({exc}); the kill switch was not changed",
              file=sys.stderr)
        return EXIT_FAIL
    state = "cleared" if args.off else "set"
    print(f"kill switch for {kind} {name} {state}; every worker follows within 1 s "
          f"({'orders allowed again' if args.off else 'only cancels are allowed'})", file=sys.stderr)
    return EXIT_OK


def _keys_rotate(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy import exchanges
    from proxy.model.sensitive import Secret

    account = cfg.account(args.account)
    if account is None:
        print(f"error: no account named {args.account!r} in {cfg.path}", file=sys.stderr)
        return EXIT_USAGE
    path = args.secret or account.secret
    if path not in account.secret_paths:
        print(f"error: {path!r} is not a key of account {account.name}; use one of "
              f"{', '.join(account.secret_paths)}", file=sys.stderr)
        return EXIT_USAGE
    if account.signing == "transit":  # its secret must never be written to KV
        return _keys_import_transit(cfg, args)
    try:
        data = json.loads(sys.stdin.read())
    except ValueError:
        print("error: stdin must be a JSON object with api_key, api_secret (and passphrase)",
              file=sys.stderr)
        return EXIT_USAGE
    allowed = {"api_key", "api_secret", "passphrase"}
    if not isinstance(data, dict) or not {"api_key", "api_secret"} <= set(data) or set(data) - allowed \
            or not all(isinstance(v, str) for v in data.values()):
        print("error: stdin must be a JSON object of strings with api_key, api_secret "
              "(and passphrase for OKX and Bitget), nothing else", file=sys.stderr)
        return EXIT_USAGE
    try:  # refuse material the exchange module cannot load before any proxy sees it
        exchanges.get(account.exchange).load_credentials({k: Secret(v) for k, v in data.items()}, 0)
    except ValueError as exc:
        print(f"error: the new key is not usable for {account.exchange}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    version = _source(cfg).write(path, data)
    print(f"wrote {cfg.vault.mount}/{path} version {version}; running proxies switch "
          "to it within a few seconds", file=sys.stderr)
    return EXIT_OK


def _keys_import_transit(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.keys.transit.importer import KeyInputError, import_account_key

    account = cfg.account(args.account)
    if account is None:
        print(f"error: no account named {args.account!r} in {cfg.path}", file=sys.stderr)
        return EXIT_USAGE
    if account.signing != "transit":
        print(f"error: account {account.name} signs locally; set signing = \"transit\" in its "
              f"[[accounts]] table in {cfg.path} first (README \"Transit mode\")", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = import_account_key(cfg.vault, account, _source(cfg), sys.stdin.read())
    except KeyInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    what = "created" if result.created else "new version of"
    print(f"{what} {cfg.vault.transit_mount}/keys/{result.transit_key}: version "
          f"{result.transit_version}; wrote {cfg.vault.mount}/{account.secret} version "
          f"{result.kv_version} without api_secret; running proxies switch to it within a few "
          "seconds", file=sys.stderr)
    return EXIT_OK


def _keys_status(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    """One JSON line per key (each key of a pool); warnings on stderr; exit 5 past the rotation
    age, 1 on errors."""
    from proxy.keys import age as key_age

    source = _source(cfg)
    now = datetime.now(UTC)
    reports = []
    for account in cfg.accounts:
        for path in account.secret_paths:
            rotate = "`keys rotate`" if path == account.secret else f"`keys rotate --secret {path}`"
            try:
                meta = source.metadata(path)
                state = key_age.KeyState(account.name, meta.current_version, meta.created)
                if meta.deleted:
                    state = key_age.KeyState(account.name, meta.current_version, meta.created,
                                             f"version {meta.current_version} was deleted or destroyed; "
                                             f"write a new one with {rotate}")
            except SecretSourceError as exc:
                state = key_age.KeyState(account.name, error=str(exc))
            report = key_age.assess(state, now, cfg.keys.rotation_warn_days)
            reports.append(report)
            print(json.dumps({**report.as_dict(), "secret": path}))
            if report.status != "ok":
                which = f"account {account.name}" + (f" key {path}" if account.secrets else "")
                print(f"{'warning' if report.status == 'rotate' else 'error'}: {which}: "
                      f"{report.message}", file=sys.stderr)
    return key_age.exit_code(reports)


def _audit_key(cfg: config_mod.Config):  # type: ignore[no-untyped-def]
    from proxy.keys.proxy_keys import AUDIT_CHAIN

    return _source(cfg).read(cfg.vault.own(AUDIT_CHAIN)).fields["key"]


def _audit_verify(cfg: config_mod.Config, args: argparse.Namespace) -> int:
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


def _filters(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from proxy.audit import reader

    return reader.Filters(
        client=args.client, account=args.account, since=_when(args.since, "--since"),
        until=_when(args.until, "--until"),
        decision=args.decision, symbol=args.symbol, request_id=args.request_id,
    )


def _audit_query(cfg: config_mod.Config, args: argparse.Namespace) -> int:
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


def _audit_tail(cfg: config_mod.Config, args: argparse.Namespace) -> int:
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


def _audit_export(cfg: config_mod.Config, args: argparse.Namespace) -> int:
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


def _audit_prune(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.audit import retention
    from proxy.audit.review import AuditIntegrityError

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
