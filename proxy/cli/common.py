"""What every command shares: exit codes, durations, the parser class, Vault and policy loading."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy import config as config_mod
from proxy.errors import ConfigError, PolicyError
from proxy.policy.loader import load_dir

if TYPE_CHECKING:
    from proxy.state import StateStore

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG, EXIT_CASES_FAILED = 0, 1, 2, 3, 4
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

#: ``add_subparsers()``'s return value; argparse gives it no public type.
Subparsers = Any


def parse_duration(text: str) -> int:
    """``Ns``, ``Nm``, ``Nh`` or ``Nd`` -> seconds."""
    m = _DURATION.fullmatch(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: use a duration such as 30s, 15m, 12h or 30d")
    return int(m.group(1)) * _UNITS[m.group(2)]


class Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with the usage line, as the contract says."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sp.add_argument("--config", required=True, type=Path, help="the proxy's TOML configuration")
    return sp


def group(sub: Subparsers, name: str, help_: str) -> Subparsers:
    """A command group (``keys``, ``audit``...) whose actions are required."""
    return sub.add_parser(name, help=help_).add_subparsers(dest="action", required=True, parser_class=Parser)


def source(cfg: config_mod.Config):  # type: ignore[no-untyped-def]
    from proxy.keys.vault import VaultSecretSource

    source = VaultSecretSource(cfg.vault)
    source.login()
    return source


def load_policies(cfg: config_mod.Config):  # type: ignore[no-untyped-def]
    try:
        return load_dir(cfg.policies_dir, {a.name for a in cfg.accounts})
    except PolicyError as exc:
        raise ConfigError(str(cfg.policies_dir), "; ".join(exc.problems)) from None


def load_config(path: Path) -> config_mod.Config:
    """The configuration, with the one file-mode rule every command applies (README "File
    permissions"): the file and any Vault credential file it names are private to the owner."""
    from proxy.server.hardening import check_config_files

    cfg = config_mod.load(path)
    check_config_files(cfg.path, (cfg.vault.token_file, cfg.vault.role_id_file, cfg.vault.secret_id_file))
    return cfg


def state_store(cfg: config_mod.Config) -> StateStore:
    """The configured state store, opened as the serving proxies open it."""
    from proxy.state import open_store

    return open_store(cfg.state.backend, path=cfg.state.path, url=cfg.state.url,
                      sqlite_synchronous="FULL" if cfg.state.synchronous == "full" else "NORMAL")
