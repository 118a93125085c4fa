"""``[[accounts]]``: one exchange account each, its key (or key pool) in Vault, its options."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PrivateAttr,
    Strict,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from proxy import exchanges
from proxy.config.fields import (
    _ACCOUNT_NAME,
    _KV_PATH,
    _TRANSIT_KEY,
    MAX_POOL,
    _between,
    _choice,
)
from proxy.model.schema import Table
from proxy.model.schema import problem as _bad


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
        problem = exchanges.testnet_problem(module) if account.environment == "testnet" else None
        if problem is not None:  # testnet never means the live exchange
            raise _bad(f"{account.exchange} has no testnet environment ({problem}); use \"live\"",
                       "environment")
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
