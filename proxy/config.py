"""The configuration file (CONTRACT.md §2): TOML, strict, relative paths against its folder.

Every unknown key and bad value is a :class:`~proxy.errors.ConfigError` whose message names the
file, where in it, the problem and what to use instead.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from proxy import exchanges
from proxy.errors import ConfigError


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerConfig:
    listen: Listen
    admin_listen: Listen
    max_body_bytes: int = 64 * 1024
    upstream_timeout_s: float = 10.0
    allow_non_loopback: bool = False


@dataclass(frozen=True)
class VaultConfig:
    addr: str
    auth: Literal["token", "approle"]
    mount: str
    token_file: Path | None = None
    role_id_file: Path | None = None
    secret_id_file: Path | None = None
    proxy_path: str = "proxy"
    timeout_s: float = 5.0
    ca_file: Path | None = None
    #: how long workers keep serving from memory while Vault is unreachable
    grace_period_s: float = 300.0
    transit_mount: str = "transit"

    def own(self, name: str) -> str:
        """The KV path of one of the proxy's own secrets (token-signing, audit-chain, ...)."""
        return f"{self.proxy_path}/{name}"


@dataclass(frozen=True)
class StateConfig:
    backend: Literal["sqlite", "redis"]
    path: Path | None
    url: str | None
    idempotency_ttl_s: int = 24 * 3600
    #: sqlite: "full" survives power loss; "normal" survives crashes (kill -9) and is faster
    synchronous: Literal["full", "normal"] = "full"


@dataclass(frozen=True)
class AccountConfig:
    name: str
    exchange: str
    environment: Literal["live", "testnet"]
    secret: str
    base_url: str
    custom_base_url: bool
    recv_window_ms: int | None = None
    nonce_unit: Literal["ms", "us"] | None = None
    #: outbound budget in the exchange's request weights per minute (None: no budget)
    weight_per_minute: int | None = None
    #: use a key even though the exchange says it can withdraw (loudly logged)
    unsafe_allow_withdraw_capable_key: bool = False
    #: "transit": the secret lives only in Vault Transit, which signs (README "Transit mode")
    signing: Literal["local", "transit"] = "local"
    transit_key: str | None = None
    #: a key pool: every KV path (the first is ``secret``); empty for a single key
    secrets: tuple[str, ...] = ()
    #: sign window-based exchanges with the exchange's clock (measured offset), not the host's
    exchange_clock: bool = True

    @property
    def secret_paths(self) -> tuple[str, ...]:
        """Every key of this account: the pool, or the single ``secret``."""
        return self.secrets or (self.secret,)


@dataclass(frozen=True)
class TokenConfig:
    issuer: str = "signing-proxy"
    audience: str = "signing-proxy"
    default_ttl_s: int = 30 * 86400
    max_ttl_s: int = 366 * 86400


@dataclass(frozen=True)
class KeysConfig:
    #: ``keys status`` warns (exit 5) about a key version older than this
    rotation_warn_days: int = 90


@dataclass(frozen=True)
class Config:
    path: Path
    server: ServerConfig
    vault: VaultConfig
    state: StateConfig
    audit_dir: Path
    policies_dir: Path
    accounts: tuple[AccountConfig, ...]
    tokens: TokenConfig
    keys: KeysConfig = KeysConfig()

    def account(self, name: str) -> AccountConfig | None:
        for acct in self.accounts:
            if acct.name == name:
                return acct
        return None


_ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_KV_PATH = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_.-]+)*")


class _Section:
    """Reads one TOML table, remembering which keys were used so leftovers are errors."""

    def __init__(self, file: Path, where: str, table: object) -> None:
        if not isinstance(table, dict):
            raise ConfigError(str(file), f"{where}: must be a table")
        self.file, self.where, self.table = file, where, table
        self.used: set[str] = set()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(str(self.file), f"{self.where}.{key}: {problem}")

    def get(self, key: str, kind: type, default: Any = None, *, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"must be a {kind.__name__}")
        return value

    def path(self, key: str, *, required: bool = False) -> Path | None:
        text = self.get(key, str, required=required)
        if text is None:
            return None
        p = Path(text)
        return p if p.is_absolute() else (self.file.parent / p)

    def finish(self) -> None:
        extra = sorted(set(self.table) - self.used)
        if extra:
            raise self.fail(extra[0], "unknown key; check the spelling against the README")


def _listen(section: _Section, key: str, default: str) -> Listen:
    text = section.get(key, str, default)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise section.fail(key, f"{text!r} is not host:port; use e.g. \"127.0.0.1:8700\"")
    return Listen(host.strip("[]"), int(port))


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
    top = _Section(file, "config", dict(raw))
    top.used.update({"server", "vault", "state", "audit", "policies", "accounts", "tokens", "keys"})
    top.finish()

    s = _Section(file, "server", raw.get("server", {}))
    server = ServerConfig(
        listen=_listen(s, "listen", "127.0.0.1:8700"),
        admin_listen=_listen(s, "admin_listen", "127.0.0.1:8701"),
        max_body_bytes=s.get("max_body_bytes", int, 64 * 1024),
        upstream_timeout_s=s.get("upstream_timeout_s", float, 10.0),
        allow_non_loopback=s.get("allow_non_loopback", bool, False),
    )
    if not 0 < server.max_body_bytes <= 16 * 1024 * 1024:
        raise s.fail("max_body_bytes", "must be between 1 and 16777216")
    if not 0 < server.upstream_timeout_s <= 120:
        raise s.fail("upstream_timeout_s", "must be between 0 and 120 seconds")
    s.finish()

    v = _Section(file, "vault", raw.get("vault", {}))
    auth = v.get("auth", str, "token")
    if auth not in ("token", "approle"):
        raise v.fail("auth", f"{auth!r} is not supported; use \"token\" or \"approle\"")
    addr = v.get("addr", str, "http://127.0.0.1:8200")
    if urlsplit(addr).scheme not in ("http", "https") or not urlsplit(addr).netloc:
        raise v.fail("addr", f"{addr!r} is not a URL; use e.g. \"https://vault.internal:8200\"")
    vault = VaultConfig(
        addr=addr, auth=auth, mount=v.get("mount", str, "secret"),
        token_file=v.path("token_file"), role_id_file=v.path("role_id_file"),
        secret_id_file=v.path("secret_id_file"), proxy_path=v.get("proxy_path", str, "proxy"),
        timeout_s=v.get("timeout_s", float, 5.0), ca_file=v.path("ca_file"),
        grace_period_s=v.get("grace_period_s", float, 300.0),
        transit_mount=v.get("transit_mount", str, "transit"),
    )
    if not 0 < vault.timeout_s <= 60:
        raise v.fail("timeout_s", "must be between 0 and 60 seconds; use e.g. 5")
    if not 0 <= vault.grace_period_s <= 7 * 86400:
        raise v.fail("grace_period_s", "must be between 0 and 604800 seconds (7 days); use e.g. 300")
    if auth == "approle" and (vault.role_id_file is None or vault.secret_id_file is None):
        raise v.fail("auth", "approle needs role_id_file and secret_id_file")
    if not _KV_PATH.fullmatch(vault.mount) or not _KV_PATH.fullmatch(vault.proxy_path):
        raise v.fail("mount", "mount and proxy_path must be plain KV paths")
    if not _KV_PATH.fullmatch(vault.transit_mount):
        raise v.fail("transit_mount", "must be a plain mount path such as \"transit\"")
    v.finish()

    st = _Section(file, "state", raw.get("state", {}))
    backend = st.get("backend", str, "sqlite")
    if backend not in ("sqlite", "redis"):
        raise st.fail("backend", f"{backend!r} is not supported; use \"sqlite\" or \"redis\"")
    state = StateConfig(
        backend=backend, path=st.path("path") or (file.parent / "state.db"),
        url=st.get("url", str), idempotency_ttl_s=st.get("idempotency_ttl_s", int, 24 * 3600),
        synchronous=_synchronous(st),
    )
    if backend == "redis" and not state.url:
        raise st.fail("url", "is required with backend = \"redis\"; use e.g. \"redis://127.0.0.1:6379/0\"")
    if state.idempotency_ttl_s < 24 * 3600:
        raise st.fail("idempotency_ttl_s", "must be at least 86400 (24 h)")
    st.finish()

    a = _Section(file, "audit", raw.get("audit", {}))
    audit_dir = a.path("dir") or file.parent / "audit"
    a.finish()
    p = _Section(file, "policies", raw.get("policies", {}))
    policies_dir = p.path("dir") or file.parent / "policies"
    p.finish()

    t = _Section(file, "tokens", raw.get("tokens", {}))
    tokens = TokenConfig(
        issuer=t.get("issuer", str, "signing-proxy"), audience=t.get("audience", str, "signing-proxy"),
        default_ttl_s=t.get("default_ttl_s", int, 30 * 86400),
        max_ttl_s=t.get("max_ttl_s", int, 366 * 86400),
    )
    t.finish()

    k = _Section(file, "keys", raw.get("keys", {}))
    keys = KeysConfig(rotation_warn_days=k.get("rotation_warn_days", int, 90))
    if not 1 <= keys.rotation_warn_days <= 3650:
        raise k.fail("rotation_warn_days", "must be between 1 and 3650 days; use e.g. 90")
    k.finish()

    accounts_raw = raw.get("accounts", [])
    if not isinstance(accounts_raw, list):
        raise ConfigError(str(file), "accounts: use [[accounts]] tables")
    accounts = tuple(_account(file, i, item) for i, item in enumerate(accounts_raw))
    names = [acct.name for acct in accounts]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        name = sorted(dupes)[0]
        raise ConfigError(str(file), f"accounts: name {name!r} is used twice; names must be unique")
    return Config(file, server, vault, state, audit_dir, policies_dir, accounts, tokens, keys)


def _synchronous(st: _Section) -> Literal["full", "normal"]:
    value = st.get("synchronous", str, "full")
    if value == "full":
        return "full"
    if value == "normal":
        return "normal"
    raise st.fail("synchronous", f"{value!r}: use \"full\" (survives power loss, the default) or "
                                 "\"normal\" (survives crashes, faster)")


def _account(file: Path, index: int, item: object) -> AccountConfig:
    s = _Section(file, f"accounts[{index}]", item)
    name = s.get("name", str, required=True)
    if not _ACCOUNT_NAME.fullmatch(name):
        raise s.fail("name", f"{name!r}: use lower-case letters, digits, '-' and '_'")
    s.where = f"accounts[{name}]"
    exchange = s.get("exchange", str, required=True)
    try:
        module = exchanges.get(exchange)
    except ValueError as exc:
        raise s.fail("exchange", str(exc)) from None
    environment = s.get("environment", str, "live")
    if environment not in ("live", "testnet"):
        raise s.fail("environment", f"{environment!r}: use \"live\" or \"testnet\"")
    secret, pool = _secrets(s)
    problem = exchanges.testnet_problem(module) if environment == "testnet" else None
    if problem is not None:
        raise s.fail("environment", f"{exchange} has no testnet environment ({problem}); use \"live\"")
    try:
        official = module.base_url(environment)
    except (ValueError, KeyError):
        raise s.fail("environment", f"{exchange} has no {environment} environment; use \"live\"") from None
    base_url = s.get("base_url", str, official).rstrip("/")
    unsafe = s.get("unsafe_custom_base_url", bool, False)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise s.fail("base_url", f"{base_url!r} is not a plain http(s) URL")
    if base_url != official and not unsafe:
        raise s.fail(
            "base_url",
            f"{base_url!r} is not {exchange}'s official {environment} URL ({official}); "
            "set unsafe_custom_base_url = true if you really mean it",
        )
    recv_window = s.get("recv_window_ms", int)
    if recv_window is not None and not 0 < recv_window <= 60000:
        raise s.fail("recv_window_ms", "must be between 1 and 60000")
    if recv_window is not None and not module.capabilities.receive_window:
        raise s.fail("recv_window_ms", f"{exchange} has no receive window to set; remove the key")
    nonce_unit = s.get("nonce_unit", str)
    if nonce_unit is not None and nonce_unit not in ("ms", "us"):
        raise s.fail("nonce_unit", "use \"ms\" or \"us\"")
    if nonce_unit is not None and module.nonce_unit is None:
        raise s.fail("nonce_unit", f"{exchange} signs with a timestamp, not a nonce; remove the key")
    weight_per_minute, unsafe_withdraw = _account_safety(s, exchange)
    signing, transit_key = _signing(s, name, exchange)
    clock = s.get("exchange_clock", bool, True)
    if "exchange_clock" in s.table and clock and module.capabilities.server_time is None:
        raise s.fail("exchange_clock", f"{exchange} has no server-time endpoint to follow; remove the key")
    if signing == "transit" and pool:
        raise s.fail("secrets", "a key pool cannot sign through Vault Transit (one transit_key per "
                                "account); use one secret, or signing = \"local\"")
    s.finish()
    return AccountConfig(
        name=name, exchange=exchange, environment=environment, secret=secret, base_url=base_url,
        custom_base_url=base_url != official, recv_window_ms=recv_window, nonce_unit=nonce_unit,
        weight_per_minute=weight_per_minute, unsafe_allow_withdraw_capable_key=unsafe_withdraw,
        signing=signing, transit_key=transit_key,
        secrets=pool, exchange_clock=clock,
    )


def _account_safety(s: _Section, exchange: str) -> tuple[int | None, bool]:
    """The account's outbound weight budget (default: the exchange's published limit; 0 turns
    it off) and the withdraw-capable-key override."""
    from proxy.exchanges.weights import default_weight_per_minute

    published = default_weight_per_minute(exchange)
    weight = s.get("weight_per_minute", int, published)
    if weight is not None and not 0 <= weight <= 10_000_000:
        hint = f" ({published} for {exchange})" if published is not None else ""
        raise s.fail("weight_per_minute", "must be between 0 (no budget) and 10000000; "
                     f"use the exchange's published limit{hint}")
    unsafe = s.get("unsafe_allow_withdraw_capable_key", bool, False)
    return (weight or None), unsafe


_TRANSIT_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def _signing(s: _Section, name: str, exchange: str) -> tuple[Literal["local", "transit"], str | None]:
    """``signing`` and ``transit_key`` of one account (README "Transit mode")."""
    signing = s.get("signing", str, "local")
    key = s.get("transit_key", str)
    if signing == "local":
        if key is not None:
            raise s.fail("transit_key", "is only for signing = \"transit\"; set that or remove transit_key")
        return "local", None
    if signing != "transit":
        raise s.fail("signing", f"{signing!r}: use \"local\" (the default) or \"transit\"")
    if not exchanges.get(exchange).capabilities.transit_signing:
        raise s.fail("signing", f"{exchange} cannot sign through Vault Transit (its JWT library needs "
                                "the private key in process); use signing = \"local\"")
    key = name if key is None else key
    if not _TRANSIT_KEY.fullmatch(key):
        raise s.fail("transit_key", f"{key!r}: use letters, digits, '-' and '_' (a Transit key name)")
    return "transit", key


MAX_POOL = 32


def _secrets(s: _Section) -> tuple[str, tuple[str, ...]]:
    """``secret = "path"`` (one key) or ``secrets = ["path", ...]`` (a key pool), never both."""
    single = s.get("secret", str)
    listed = s.get("secrets", list)
    if single is not None and listed is not None:
        raise s.fail("secrets", "set either secret (one key) or secrets (a key pool), not both")
    if single is None and listed is None:
        raise s.fail("secret", "is required; use secret = \"exchanges/NAME\", "
                               "or secrets = [...] for a key pool")
    paths = [single] if single is not None else listed
    key = "secret" if single is not None else "secrets"
    if not paths or len(paths) > MAX_POOL:
        raise s.fail(key, f"list 1 to {MAX_POOL} KV paths, "
                          "e.g. [\"exchanges/main-a\", \"exchanges/main-b\"]")
    for path in paths:
        if not isinstance(path, str) or not _KV_PATH.fullmatch(path):
            raise s.fail(key, "must be a KV path such as \"exchanges/main\"")
    if len(set(paths)) != len(paths):
        raise s.fail(key, "a path is listed twice; each key of a pool once")
    return paths[0], (tuple(paths) if listed is not None else ())
