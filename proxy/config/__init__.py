"""The configuration file (CONTRACT.md §2): TOML, strict, relative paths against its folder.

One declarative schema (pydantic v2 models below): every key, its type, its default (written
here once) and its range. Every unknown key and bad value is a :class:`~proxy.errors.ConfigError`
whose message names the file, where in it, the problem and what to use instead.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    model_validator,
)

from proxy.config.accounts import AccountConfig
from proxy.config.fields import _ACCOUNT_NAME, FilePath, Listen, ListenText, _between, _choice, _kv_path
from proxy.errors import ConfigError
from proxy.model.schema import Table, dotted, location, ours
from proxy.model.schema import problem as _bad

__all__ = ["AccountConfig", "Config", "Listen", "load", "parse"]

class ServerConfig(Table):
    listen: ListenText = Listen("127.0.0.1", 8700)
    admin_listen: ListenText = Listen("127.0.0.1", 8701)
    max_body_bytes: Annotated[
        int, _between(1, 16 * 1024 * 1024, "must be between 1 and 16777216")] = 64 * 1024
    upstream_timeout_s: Annotated[
        float, _between(1e-9, 120, "must be between 0 and 120 seconds")] = 10.0
    allow_non_loopback: bool = False


def _url(value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _bad(f"{value!r} is not a URL; use e.g. \"https://vault.internal:8200\"")
    return value


class VaultConfig(Table):
    addr: Annotated[str, AfterValidator(_url)] = "http://127.0.0.1:8200"
    auth: Annotated[Literal["token", "approle"], _choice("token", "approle", unsupported=True)] = "token"
    mount: Annotated[str, _kv_path("secret")] = "secret"
    token_file: FilePath | None = None
    role_id_file: FilePath | None = None
    secret_id_file: FilePath | None = None
    proxy_path: Annotated[str, _kv_path("proxy")] = "proxy"
    timeout_s: Annotated[float, _between(1e-9, 60, "must be between 0 and 60 seconds; use e.g. 5")] = 5.0
    ca_file: FilePath | None = None
    #: how long workers keep serving from memory while Vault is unreachable
    grace_period_s: Annotated[float, _between(
        0, 7 * 86400, "must be between 0 and 604800 seconds (7 days); use e.g. 300")] = 300.0
    transit_mount: Annotated[str, _kv_path("transit")] = "transit"

    @model_validator(mode="after")
    def _approle_files(self) -> VaultConfig:
        if self.auth == "approle" and (self.role_id_file is None or self.secret_id_file is None):
            raise _bad("approle needs role_id_file and secret_id_file", "auth")
        return self

    def own(self, name: str) -> str:
        """The KV path of one of the proxy's own secrets (token-signing, audit-chain, ...)."""
        return f"{self.proxy_path}/{name}"


class StateConfig(Table):
    backend: Annotated[Literal["sqlite", "redis"], _choice("sqlite", "redis", unsupported=True)] = "sqlite"
    path: FilePath = Field(default="state.db", validate_default=True)  # next to the file
    url: str | None = None
    idempotency_ttl_s: Annotated[int, _between(86400, float("inf"), "must be at least 86400 (24 h)")] = 86400
    #: sqlite: "full" survives power loss; "normal" survives crashes (kill -9) and is faster
    synchronous: Annotated[Literal["full", "normal"], _choice(
        "full", "normal",
        problem="use \"full\" (survives power loss, the default) or \"normal\" (survives crashes, faster)",
    )] = "full"

    @model_validator(mode="after")
    def _redis_url(self) -> StateConfig:
        if self.backend == "redis" and not self.url:
            raise _bad("is required with backend = \"redis\"; use e.g. \"redis://127.0.0.1:6379/0\"", "url")
        return self


class DirConfig(Table):
    dir: FilePath | None = None


def _transit_key_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", value):
        raise _bad("must be a plain Transit key name, e.g. \"audit-checkpoint\"")
    return value


class AuditConfig(Table):
    """``[audit]``: the trail's folder, and its signed checkpoints (docs/audit.md): ``signing``
    "kv", "transit" (the non-exportable ``transit_key``) or "off"; how often; the witnesses (an
    append-only folder on another volume; Vault KV)."""

    dir: FilePath | None = None
    checkpoint_signing: Annotated[Literal["kv", "transit", "off"], _choice("kv", "transit", "off")] = "kv"
    checkpoint_transit_key: Annotated[str, AfterValidator(_transit_key_name)] = "audit-checkpoint"
    checkpoint_every_records: Annotated[int, _between(
        1, 1_000_000, "must be between 1 and 1000000; use e.g. 1000")] = 1000
    checkpoint_every_s: Annotated[float, _between(
        0.1, 3600, "must be between 0.1 and 3600 seconds; use e.g. 10")] = 10.0
    witness_dir: FilePath | None = None
    witness_vault: bool = False


@dataclass(frozen=True)
class CheckpointConfig:
    """The checkpoint settings of ``[audit]``, as the writer and the commands use them."""

    signing: Literal["kv", "transit", "off"] = "kv"
    transit_key: str = "audit-checkpoint"
    every_records: int = 1000
    every_s: float = 10.0
    witness_dir: Path | None = None
    witness_vault: bool = False


def _nonempty_name(value: str) -> str:
    if not value.strip() or value != value.strip():
        raise _bad(f"{value!r}: use a non-empty name without surrounding spaces, e.g. \"signing-proxy\"")
    return value


_TTL_LIMIT = 10 * 366 * 86400
_TTL_RANGE = f"must be between 1 and {_TTL_LIMIT} seconds (10 years)"


class TokenConfig(Table):
    issuer: Annotated[str, AfterValidator(_nonempty_name)] = "signing-proxy"
    audience: Annotated[str, AfterValidator(_nonempty_name)] = "signing-proxy"
    default_ttl_s: Annotated[int, _between(
        1, _TTL_LIMIT, f"{_TTL_RANGE}; use e.g. 2592000 (30 days)")] = 30 * 86400
    max_ttl_s: Annotated[int, _between(
        1, _TTL_LIMIT, f"{_TTL_RANGE}; use e.g. 31622400 (366 days)")] = 366 * 86400

    @model_validator(mode="after")
    def _default_within_max(self) -> TokenConfig:
        if self.default_ttl_s > self.max_ttl_s:
            raise _bad(f"{self.default_ttl_s} is longer than max_ttl_s ({self.max_ttl_s}); "
                       "lower default_ttl_s or raise max_ttl_s", "default_ttl_s")
        return self


class KeysConfig(Table):
    #: ``keys status`` warns (exit 5) about a key version older than this
    rotation_warn_days: Annotated[int, _between(1, 3650, "must be between 1 and 3650 days; use e.g. 90")] = 90


class Config(Table):
    """The whole file. Sections absent from the file take every default."""

    server: ServerConfig = ServerConfig()
    vault: VaultConfig = VaultConfig()
    state: StateConfig
    audit: AuditConfig
    policies: DirConfig
    tokens: TokenConfig = TokenConfig()
    keys: KeysConfig = KeysConfig()
    accounts: Annotated[tuple[AccountConfig, ...], Strict(False)] = ()
    _path: Path = PrivateAttr(default=Path())

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        """Tables whose defaults are paths are validated even when absent (paths need the folder)."""
        if isinstance(data, dict):
            data = {"state": {}, "audit": {}, "policies": {}, **data}
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [acct.name for acct in self.accounts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _bad(f"name {dupes[0]!r} is used twice; names must be unique")
        return self

    @property
    def path(self) -> Path:
        return self._path

    @property
    def audit_dir(self) -> Path:
        return self.audit.dir or self._path.parent / "audit"

    @property
    def checkpoints(self) -> CheckpointConfig:
        a = self.audit
        return CheckpointConfig(a.checkpoint_signing, a.checkpoint_transit_key, a.checkpoint_every_records,
                                a.checkpoint_every_s, a.witness_dir, a.witness_vault)

    @property
    def policies_dir(self) -> Path:
        return self.policies.dir or self._path.parent / "policies"

    def account(self, name: str) -> AccountConfig | None:
        return next((acct for acct in self.accounts if acct.name == name), None)


def load(path: str | Path) -> Config:
    """Load and validate the configuration file at ``path``."""
    file = Path(path).resolve()
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(file), "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), f"cannot be read ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), f"not valid TOML: {exc}") from None
    return parse(file, raw)


def parse(file: Path, raw: Mapping[str, Any]) -> Config:
    """Validate ``raw`` (the parsed TOML of ``file``); the first problem is a ConfigError."""
    try:
        cfg = Config.model_validate(dict(raw), context={"dir": file.parent})
    except ValidationError as exc:
        raise ConfigError(str(file), _message(exc.errors(include_url=False)[0], raw)) from None
    cfg._path = file
    return cfg


_KINDS: Mapping[str, str] = {
    "int_type": "must be a int", "int_from_float": "must be a int", "bool_type": "must be a bool",
    "string_type": "must be a str", "float_type": "must be a float", "tuple_type": "must be a list",
    "list_type": "must be a list", "model_type": "must be a table", "dict_type": "must be a table",
    "missing": "is required", "literal_error": "must be a str", "path_type": "must be a str",
    "extra_forbidden": "unknown key; check the spelling against the README",
}


def _message(error: Any, raw: Mapping[str, Any]) -> str:
    """``where.key: problem`` from one pydantic error, in the file's own terms."""
    loc = location(error)
    problem = ours(error) or _KINDS.get(error["type"], error["msg"])
    if loc == ["accounts"] and error["type"] == "tuple_type":
        return "accounts: use [[accounts]] tables"
    if not loc:
        return f"accounts: {problem}"  # the only whole-file check: unique account names
    if len(loc) == 1 and loc[0] not in Config.model_fields:
        return f"config.{loc[0]}: {problem}"
    return f"{_where(loc, raw)}: {problem}"


def _where(loc: Sequence[str | int], raw: Mapping[str, Any]) -> str:
    """``server.listen``; ``accounts[main].secret`` (the index until the name is valid)."""
    if loc[0] == "accounts" and len(loc) > 1 and isinstance(loc[1], int):
        item = (raw.get("accounts") or [{}])[loc[1]]
        name = item.get("name") if isinstance(item, dict) else None
        label = name if isinstance(name, str) and _ACCOUNT_NAME.fullmatch(name) else loc[1]
        if len(loc) > 2 and loc[2] == "name":
            label = loc[1]
        loc = [f"accounts[{label}]", *loc[2:]]
    return dotted(loc)
