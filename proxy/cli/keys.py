"""``keys rotate``, ``keys status`` and ``keys import-transit``: the exchange keys in Vault."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from proxy import config as config_mod
from proxy.cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    Subparsers,
    group,
    source,
    state_store,
    with_config,
)
from proxy.errors import SecretSourceError


def register(sub: Subparsers) -> None:
    keys = group(sub, "keys", "exchange keys")
    kr = with_config(keys.add_parser("rotate", help="write a new key version read from stdin"))
    kr.add_argument("--account", required=True)
    kr.add_argument("--secret", metavar="PATH",
                    help="which key of a key pool (one of the account's secrets); default: its first")
    kr.add_argument("--skip-exchange-check", action="store_true",
                    help="write without first checking the key with a signed read at the exchange "
                         "(when the exchange cannot be reached from here)")
    kb = with_config(keys.add_parser(
        "rollback", help="make the previous key version current again",
        description="Write the newest earlier version of the account's secret (that is not deleted) "
                    "as a new version: running proxies switch back to it within a few seconds.",
    ))
    kb.add_argument("--account", required=True)
    kb.add_argument("--secret", metavar="PATH", help="which key of a key pool; default: its first")
    kb.set_defaults(handler=rollback)
    ks = with_config(keys.add_parser(
        "status", help="each account's key version and age, and the exchange's last verdict",
        description="One JSON line per key (every key of a key pool, each with its KV path as "
                    "\"secret\"): key version, creation time and age in days, and what the running "
                    "proxy last heard from the exchange about the account's key (\"exchange\": "
                    "can_sign, why, exchange_verdict; read from its /readyz).",
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
    kr.set_defaults(handler=rotate)
    ks.set_defaults(handler=status)
    kt.set_defaults(handler=import_transit)


def rotate(cfg: config_mod.Config, args: argparse.Namespace) -> int:
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
        return import_transit(cfg, args)
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
              "(and passphrase where the exchange issues one), nothing else", file=sys.stderr)
        return EXIT_USAGE
    try:  # refuse material the exchange module cannot load before any proxy sees it
        creds = exchanges.get(account.exchange).load_credentials({k: Secret(v) for k, v in data.items()}, 0)
    except ValueError as exc:
        print(f"error: the new key is not usable for {account.exchange}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.skip_exchange_check:
        print(f"warning: the new key was not checked at {account.exchange} (--skip-exchange-check)",
              file=sys.stderr)
    else:
        from proxy.errors import KeyCheckFailed
        from proxy.guards.key_check import check_new_key
        from proxy.pipeline.accounts import build

        built = build(account)  # the exchange as this account uses it (testnet, receive window)
        try:
            print(check_new_key(built.exchange, account.base_url, built.host, creds,
                                store=lambda: state_store(cfg)), file=sys.stderr)
        except KeyCheckFailed as exc:
            hint = ("; if the exchange is unreachable from here, --skip-exchange-check writes anyway"
                    if exc.unreachable else "; nothing was written")
            print(f"error: {exc}{hint}", file=sys.stderr)
            return EXIT_FAIL
    version = source(cfg).write(path, data)
    print(f"wrote {cfg.vault.mount}/{path} version {version}; running proxies switch "
          "to it within a few seconds", file=sys.stderr)
    return EXIT_OK


def _serving_fallbacks(readyz: dict[str, Any] | str) -> dict[str, str]:
    """What the serving proxy says about refused key versions (its /readyz "keys_fallback")."""
    found = readyz.get("keys_fallback") if isinstance(readyz, dict) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _readyz(cfg: config_mod.Config) -> dict[str, Any] | str:
    """The running proxy's /readyz (a 503 has the same body), or why there is none. The
    exchange's last verdict on each key lives in the serving processes, not in Vault."""
    url = f"http://{cfg.server.admin_listen}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:  # 503 not ready: the body still says why
        body = json.loads(exc.read() or b"null")
    except (OSError, ValueError):
        return f"unknown: no proxy answers on {url}"
    return body if isinstance(body, dict) else f"unknown: {url} answered no object"


def rollback(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    """Write the newest readable version before the current one as a new version."""
    account = cfg.account(args.account)
    if account is None:
        print(f"error: no account named {args.account!r} in {cfg.path}", file=sys.stderr)
        return EXIT_USAGE
    path = args.secret or account.secret
    if path not in account.secret_paths:
        print(f"error: {path!r} is not a key of account {account.name}; use one of "
              f"{', '.join(account.secret_paths)}", file=sys.stderr)
        return EXIT_USAGE
    vault = source(cfg)
    current = vault.metadata(path).current_version
    for version in range(current - 1, 0, -1):
        try:
            previous = vault.read(path, version)
        except SecretSourceError:
            continue  # deleted or destroyed: try the one before
        written = vault.write(path, {k: v.reveal() for k, v in previous.fields.items()})
        print(f"wrote version {version} of {cfg.vault.mount}/{path} again as version {written}; "
              "running proxies switch to it within a few seconds", file=sys.stderr)
        return EXIT_OK
    print(f"error: {cfg.vault.mount}/{path} has no earlier readable version than {current}",
          file=sys.stderr)
    return EXIT_FAIL


def import_transit(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.errors import KeyInputError
    from proxy.keys.transit.importer import import_account_key

    account = cfg.account(args.account)
    if account is None:
        print(f"error: no account named {args.account!r} in {cfg.path}", file=sys.stderr)
        return EXIT_USAGE
    if account.signing != "transit":
        print(f"error: account {account.name} signs locally; set signing = \"transit\" in its "
              f"[[accounts]] table in {cfg.path} first (README \"Transit mode\")", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = import_account_key(cfg.vault, account, source(cfg), sys.stdin.read())
    except KeyInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    what = "created" if result.created else "new version of"
    print(f"{what} {cfg.vault.transit_mount}/keys/{result.transit_key}: version "
          f"{result.transit_version}; wrote {cfg.vault.mount}/{account.secret} version "
          f"{result.kv_version} without api_secret; running proxies switch to it within a few "
          "seconds", file=sys.stderr)
    return EXIT_OK


def status(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    """One JSON line per key (each key of a pool); warnings on stderr; exit 5 past the rotation
    age, 1 on errors."""
    from proxy.keys import age as key_age

    vault = source(cfg)
    now = datetime.now(UTC)
    readyz = _readyz(cfg)
    serving = _serving_fallbacks(readyz)
    reports = []
    verdicts = _running_verdicts(readyz)
    for account in cfg.accounts:
        for path in account.secret_paths:
            rotate = "`keys rotate`" if path == account.secret else f"`keys rotate --secret {path}`"
            try:
                meta = vault.metadata(path)
                state = key_age.KeyState(account.name, meta.current_version, meta.created)
                if meta.deleted:
                    state = key_age.KeyState(account.name, meta.current_version, meta.created,
                                             f"version {meta.current_version} was deleted or destroyed; "
                                             f"write a new one with {rotate}")
            except SecretSourceError as exc:
                state = key_age.KeyState(account.name, error=str(exc))
            report = key_age.assess(state, now, cfg.keys.rotation_warn_days)
            reports.append(report)
            row: dict[str, object] = {**report.as_dict(), "secret": path}
            if path == account.secret and account.name in serving:
                row["serving"] = serving[account.name]
                print(f"error: account {account.name}: the running proxy says {serving[account.name]}",
                      file=sys.stderr)
            seen = verdicts.get(account.name) if isinstance(verdicts, dict) else None
            row["exchange"] = seen if seen is not None else {"exchange_verdict": str(verdicts)}
            print(json.dumps(row))
            if report.status != "ok":
                which = f"account {account.name}" + (f" key {path}" if account.secrets else "")
                print(f"{'warning' if report.status == 'rotate' else 'error'}: {which}: "
                      f"{report.message}", file=sys.stderr)
    return key_age.exit_code(reports)


def _running_verdicts(readyz: dict[str, Any] | str) -> dict[str, object] | str:
    """Each account's signing state from /readyz (docs/interface.md "Operators")."""
    if isinstance(readyz, str):
        return readyz
    accounts = readyz.get("accounts")
    return accounts if isinstance(accounts, dict) else "unknown: the proxy names no accounts"
