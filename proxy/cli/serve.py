"""``init``, ``serve`` and ``kill``: bringing the proxy up and stopping a client or account."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from proxy import config as config_mod
from proxy.cli.common import (
    EXIT_CONFIG,
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    Subparsers,
    load_policies,
    source,
    state_store,
    with_config,
)


def register(sub: Subparsers) -> None:
    init_ = with_config(sub.add_parser("init", help="create the proxy's own keys in Vault (idempotent)"))
    init_.set_defaults(handler=init)
    s = with_config(sub.add_parser("serve", help="serve bots and operators"))
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--unsafe-allow-root", action="store_true")
    s.set_defaults(handler=serve)
    kill = with_config(sub.add_parser(
        "kill", help="kill switch: refuse everything but cancels for a client or an account",
        description="Set (or with --off clear) a kill switch in the shared state store; every "
                    "worker on every host refuses all but cancels within 1 s.",
    ))
    who = kill.add_mutually_exclusive_group(required=True)
    who.add_argument("--client")
    who.add_argument("--account")
    kill.add_argument("--off", action="store_true", help="clear the kill switch")
    kill.set_defaults(handler=kill_switch)


def init(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.keys.audit_signing import init_checkpoint_keys, transit_client
    from proxy.keys.proxy_keys import init_keys

    vault = source(cfg)
    written = init_keys(vault, cfg.vault)
    written += init_checkpoint_keys(vault, cfg, transit_client(vault, cfg))
    for path in written:
        print(f"created {cfg.vault.mount}/{path}", file=sys.stderr)
    if not written:
        print("the proxy's keys already exist; nothing to do", file=sys.stderr)
    return EXIT_OK


def serve(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    from proxy.server.supervisor import configure_logging
    from proxy.server.supervisor import serve as run

    configure_logging(os.environ.get("PROXY_LOG_LEVEL", "INFO").upper())
    _harden(cfg, allow_root=args.unsafe_allow_root)
    _check_state_path(cfg)
    policies = load_policies(cfg)
    from proxy.errors import VaultUnreachable
    from proxy.keys.audit_signing import AUDIT_SIGNING
    from proxy.keys.proxy_keys import AUDIT_CHAIN, TOKEN_VERIFY

    try:
        vault = source(cfg)
        needed = (TOKEN_VERIFY, AUDIT_CHAIN) + ((AUDIT_SIGNING,) if cfg.checkpoints.signing == "kv" else ())
        for name in needed:
            if not vault.exists(cfg.vault.own(name)):
                print(f"error: {cfg.vault.mount}/{cfg.vault.own(name)} is missing; "
                      f"run `python -m proxy init --config {cfg.path}` first", file=sys.stderr)
                return EXIT_CONFIG
    except VaultUnreachable as exc:  # serve anyway: not ready until Vault comes (no restart)
        print(f"warning: {exc}; serving 503 not_ready and retrying until it answers", file=sys.stderr)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    for warning in policies.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return run(cfg, args.workers)  # every worker loads the policy files itself


def _check_state_path(cfg: config_mod.Config) -> None:
    """A mistyped state path must not start an empty store: idempotency and nonce history
    would silently begin from nothing. Its directory must exist (the file may be new)."""
    from proxy.errors import ConfigError

    path = cfg.state.path
    if cfg.state.backend == "sqlite" and path is not None and not path.parent.is_dir():
        raise ConfigError(str(cfg.path), f"state.path: the directory {path.parent} does not exist; "
                                         "correct the path, or create the directory for a new store")


def _harden(cfg: config_mod.Config, *, allow_root: bool) -> None:
    """Process hardening at start (no core dumps, umask, root refusal, private files)."""
    from proxy.server import hardening as process_guard

    process_guard.refuse_root(allow_root)
    process_guard.harden_process()
    # the configuration and credential files: checked by every command (proxy/cli/__init__.py)
    for listen in (cfg.server.listen, cfg.server.admin_listen):
        process_guard.check_listen_address(str(listen), cfg.server.allow_non_loopback)


def kill_switch(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    import asyncio

    from proxy.errors import NotReady
    from proxy.policy.runtime import kill_flag

    kind, name = ("client", args.client) if args.client else ("account", args.account)
    if kind == "account" and cfg.account(name) is None:
        print(f"error: no account named {name!r} in {cfg.path}", file=sys.stderr)
        return EXIT_USAGE

    async def flip() -> None:
        store = state_store(cfg)
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
