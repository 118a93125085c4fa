"""``python -m proxy``: the operators' commands (CONTRACT.md §1).

Exit codes: 0 success, 1 failure at run time (e.g. Vault unreachable), 2 usage error,
3 invalid configuration or policy (or policy test file), 4 failing policy test cases.
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
    with_config(keys.add_parser("status", help="each account's key version and age"))
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
    return p


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
        from proxy.demo import run_demo

        return run_demo()
    cfg = config_mod.load(args.config)
    command = args.command if args.command in ("init", "serve", "kill") else f"{args.command} {args.action}"
    handler = {
        "init": _init, "serve": _serve, "token issue": _token_issue, "token revoke": _token_revoke,
        "policy check": _policy_check, "kill": _kill, "keys rotate": _keys_rotate,
        "keys status": _keys_status, "keys import-transit": _keys_import_transit,
        "audit verify": _audit_verify, "audit query": _audit_query,
    }[command]
    return handler(cfg, args)


def _source(cfg: config_mod.Config):  # type: ignore[no-untyped-def]
    from proxy.secret_source import VaultSecretSource

    source = VaultSecretSource(cfg.vault)
    source.login()
    return source


def _init(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.proxy_keys import init_keys

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
    from proxy.serve import configure_logging, serve

    configure_logging(os.environ.get("PROXY_LOG_LEVEL", "INFO").upper())
    _harden(cfg, allow_root=args.unsafe_allow_root)
    policies = _load_policies(cfg)
    source = _source(cfg)
    from proxy.proxy_keys import AUDIT_CHAIN, TOKEN_VERIFY

    for name in (TOKEN_VERIFY, AUDIT_CHAIN):
        if not source.exists(cfg.vault.own(name)):
            print(f"error: {cfg.vault.mount}/{cfg.vault.own(name)} is missing; "
                  f"run `python -m proxy init --config {cfg.path}` first", file=sys.stderr)
            return EXIT_CONFIG
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    return serve(cfg, policies, args.workers)


def _harden(cfg: config_mod.Config, *, allow_root: bool) -> None:
    """Process hardening at start (no core dumps, umask, root refusal, private files)."""
    from proxy import process_guard

    process_guard.refuse_root(allow_root)
    process_guard.harden_process()
    for path in (cfg.path, cfg.vault.token_file, cfg.vault.role_id_file, cfg.vault.secret_id_file):
        if path is not None:
            process_guard.check_private_file(path)
    for listen in (cfg.server.listen, cfg.server.admin_listen):
        process_guard.check_listen_address(str(listen), cfg.server.allow_non_loopback)


def _token_issue(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy import client_auth
    from proxy.proxy_keys import TOKEN_SIGNING

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
    from proxy.proxy_keys import revoke_client

    revoke_client(_source(cfg), cfg.vault, args.client, int(time.time()) + 1)
    print(f"revoked every token of {args.client} issued until now; proxies refuse them within "
          "a few seconds. Issue a new token to restore access.", file=sys.stderr)
    return EXIT_OK


def _policy_check(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy import accounts as accounts_mod
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
        store = open_store(cfg.state.backend, path=cfg.state.path, url=cfg.state.url)
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
    from proxy.sensitive import Secret

    account = cfg.account(args.account)
    if account is None:
        print(f"error: no account named {args.account!r} in {cfg.path}", file=sys.stderr)
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
    version = _source(cfg).write(account.secret, data)
    print(f"wrote {cfg.vault.mount}/{account.secret} version {version}; running proxies switch "
          "to it within a few seconds", file=sys.stderr)
    return EXIT_OK


def _keys_import_transit(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.transit_keys import KeyInputError, import_account_key

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
    source = _source(cfg)
    for account in cfg.accounts:
        try:
            version = source.current_version(account.secret)
            print(json.dumps({"account": account.name, "version": version}))
        except SecretSourceError as exc:
            print(json.dumps({"account": account.name, "error": str(exc)}))
    return EXIT_OK


def _audit_key(cfg: config_mod.Config):  # type: ignore[no-untyped-def]
    from proxy.proxy_keys import AUDIT_CHAIN

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


def _audit_query(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.audit import reader

    filters = reader.Filters(
        client=args.client, account=args.account, since=_when(args.since, "--since"),
        until=_when(args.until, "--until"),
        decision=args.decision, symbol=args.symbol, request_id=args.request_id,
    )
    records = reader.query(args.dir or cfg.audit_dir, filters)
    if args.format == "table":
        print(reader.format_table(list(records)))
    else:
        for record in records:
            print(json.dumps(record, sort_keys=True))
    return EXIT_OK
