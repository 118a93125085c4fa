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
    BeforeValidator,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from proxy import exchanges
from proxy.errors import ConfigError
from proxy.model.schema import Table, dotted, location, ours
from proxy.model.schema import problem as _bad

_ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_KV_PATH = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_.-]+)*")
_TRANSIT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
MAX_POOL = 32


def _between(low: float, high: float, problem: str) -> AfterValidator:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise _bad(problem)
        return value
    return AfterValidator(check)


def _choice(*options: str, problem: str = "", unsupported: bool = False) -> BeforeValidator:
    """A string that must be one of ``options``: ``'x': use "a" or "b"``."""
    use = problem or "use " + " or ".join(f'"{o}"' for o in options)
    lead = " is not supported; " if unsupported else ": "

    def check(value: object) -> object:
        if isinstance(value, str) and value not in options:
            raise _bad(f"{value!r}{lead}{use}")
        return value
    return BeforeValidator(check)


def _relative_path(value: object, info: ValidationInfo) -> object:
    """A path in the file is relative to the file's folder."""
    if not isinstance(value, str):
        return value  # the type check says "must be a str"
    path = Path(value)
    base: Path = (info.context or {})["dir"]
    return path if path.is_absolute() else base / path


def _kv_path(example: str) -> AfterValidator:
    def check(value: str) -> str:
        if not _KV_PATH.fullmatch(value):
            raise _bad(f"must be a plain KV path such as \"{example}\"")
        return value
    return AfterValidator(check)


FilePath = Annotated[Path, Strict(False), BeforeValidator(_relative_path)]


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _listen(value: object) -> object:
    if not isinstance(value, str):
        raise _bad("must be a str")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad(f"{value!r} is not host:port; use e.g. \"127.0.0.1:8700\"")
    return Listen(host.strip("[]"), int(port))


ListenText = Annotated[Listen, BeforeValidator(_listen)]


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


def _account_name(value: str) -> str:
    if not _ACCOUNT_NAME.fullmatch(value):
        raise _bad(f"{value!r}: use lower-case letters, digits, '-' and '_'")
    return value


def _exchange_name(value: str) -> str:
    try:
        exchanges.get(value)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    return value


def _pool_path(value: object) -> object:
    if not isinstance(value, str) or not _KV_PATH.fullmatch(value):
        raise _bad("must be a KV path such as \"exchanges/main\"")
    return value


class AccountConfig(Table):
    name: Annotated[str, AfterValidator(_account_name)]
    exchange: Annotated[str, AfterValidator(_exchange_name)]
    environment: Annotated[Literal["live", "testnet"], _choice("live", "testnet")] = "live"
    #: one key's KV path; with a pool, the pool's first path
    secret: str = ""
    #: a key pool: every KV path (the first is ``secret``); empty for a single key
    secrets: Annotated[tuple[Annotated[str, BeforeValidator(_pool_path)], ...], Strict(False)] = ()
    #: empty in the file: the exchange's official URL for ``environment``
    base_url: str = ""
    unsafe_custom_base_url: bool = False
    recv_window_ms: Annotated[int, _between(1, 60000, "must be between 1 and 60000")] | None = None
    nonce_unit: Annotated[Literal["ms", "us"], _choice("ms", "us")] | None = None
    #: outbound budget in the exchange's request weights per minute (None: no budget; the file's
    #: default is the exchange's published limit and 0 turns it off)
    weight_per_minute: int | None = None
    #: use a key even though the exchange says it can withdraw (loudly logged)
    unsafe_allow_withdraw_capable_key: bool = False
    #: "transit": the secret lives only in Vault Transit, which signs (README "Transit mode")
    signing: Annotated[Literal["local", "transit"], _choice(
        "local", "transit", problem="use \"local\" (the default) or \"transit\"")] = "local"
    transit_key: str | None = None
    #: sign window-based exchanges with the exchange's clock (measured offset), not the host's
    exchange_clock: bool = True
    _official_url: str = PrivateAttr(default="")

    @model_validator(mode="wrap")
    @classmethod
    def _complete(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> AccountConfig:
        """The keys' types first, then what depends on the exchange and on other keys."""
        account: AccountConfig = handler(data)
        given = account.model_fields_set
        module = exchanges.get(account.exchange)
        try:
            official = module.base_url(account.environment)
        except (ValueError, KeyError):
            raise _bad(f"{account.exchange} has no {account.environment} environment; use \"live\"",
                       "environment") from None
        update: dict[str, Any] = _secrets(account, given)
        base_url = (account.base_url or official).rstrip("/")
        _check_base_url(account, base_url, official)
        update["base_url"] = base_url
        if account.recv_window_ms is not None and not module.capabilities.receive_window:
            raise _bad(f"{account.exchange} has no receive window to set; remove the key", "recv_window_ms")
        if account.nonce_unit is not None and module.nonce_unit is None:
            raise _bad(f"{account.exchange} signs with a timestamp, not a nonce; remove the key",
                       "nonce_unit")
        if "exchange_clock" in given and account.exchange_clock and module.capabilities.server_time is None:
            raise _bad(f"{account.exchange} has no server-time endpoint to follow; remove the key",
                       "exchange_clock")
        update["weight_per_minute"] = _weight(account, given)
        update["transit_key"] = _transit_key(account, bool(update["secrets"]))
        done = account.model_copy(update=update)
        done._official_url = official
        return done

    @property
    def custom_base_url(self) -> bool:
        return self.base_url != self._official_url

    @property
    def secret_paths(self) -> tuple[str, ...]:
        """Every key of this account: the pool, or the single ``secret``."""
        return self.secrets or (self.secret,)


def _secrets(account: AccountConfig, given: set[str]) -> dict[str, Any]:
    """``secret = "path"`` (one key) or ``secrets = ["path", ...]`` (a key pool), never both."""
    if "secret" in given and "secrets" in given:
        raise _bad("set either secret (one key) or secrets (a key pool), not both", "secrets")
    if "secret" not in given and "secrets" not in given:
        raise _bad("is required; use secret = \"exchanges/NAME\", or secrets = [...] for a key pool",
                   "secret")
    key = "secret" if "secret" in given else "secrets"
    paths = [account.secret] if key == "secret" else list(account.secrets)
    if not paths or len(paths) > MAX_POOL:
        raise _bad(f"list 1 to {MAX_POOL} KV paths, e.g. [\"exchanges/main-a\", \"exchanges/main-b\"]",
                   key)
    if not all(_KV_PATH.fullmatch(p) for p in paths):
        raise _bad("must be a KV path such as \"exchanges/main\"", key)
    if len(set(paths)) != len(paths):
        raise _bad("a path is listed twice; each key of a pool once", key)
    return {"secret": paths[0], "secrets": tuple(paths) if key == "secrets" else ()}


def _weight(account: AccountConfig, given: set[str]) -> int | None:
    """The outbound weight budget: the exchange's published limit unless set; 0 turns it off."""
    from proxy.exchanges.weights import default_weight_per_minute

    published = default_weight_per_minute(account.exchange)
    if "weight_per_minute" not in given:
        return published
    weight = account.weight_per_minute
    if weight is not None and not 0 <= weight <= 10_000_000:
        hint = f" ({published} for {account.exchange})" if published is not None else ""
        raise _bad("must be between 0 (no budget) and 10000000; use the exchange's published "
                   f"limit{hint}", "weight_per_minute")
    return weight or None


def _check_base_url(account: AccountConfig, base_url: str, official: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise _bad(f"{base_url!r} is not a plain http(s) URL", "base_url")
    if base_url != official and not account.unsafe_custom_base_url:
        raise _bad(f"{base_url!r} is not {account.exchange}'s official {account.environment} URL "
                   f"({official}); set unsafe_custom_base_url = true if you really mean it", "base_url")


def _transit_key(account: AccountConfig, pool: bool) -> str | None:
    """``transit_key`` of one account: only with signing = "transit" (README "Transit mode")."""
    key = account.transit_key
    if account.signing == "local":
        if key is not None:
            raise _bad("is only for signing = \"transit\"; set that or remove transit_key", "transit_key")
        return None
    if not exchanges.get(account.exchange).capabilities.transit_signing:
        raise _bad(f"{account.exchange} cannot sign through Vault Transit (its JWT library needs the "
                   "private key in process); use signing = \"local\"", "signing")
    if pool:
        raise _bad("a key pool cannot sign through Vault Transit (one transit_key per account); "
                   "use one secret, or signing = \"local\"", "secrets")
    key = account.name if key is None else key
    if not _TRANSIT_KEY.fullmatch(key):
        raise _bad(f"{key!r}: use letters, digits, '-' and '_' (a Transit key name)", "transit_key")
    return key


class Config(Table):
    """The whole file. Sections absent from the file take every default."""

    server: ServerConfig = ServerConfig()
    vault: VaultConfig = VaultConfig()
    state: StateConfig
    audit: DirConfig
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

