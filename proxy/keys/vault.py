"""Vault (or OpenBao) KV v2 through hvac: the only place exchange secrets come from.

hvac is synchronous, so this is called at start-up and on change (from a thread), never per
request. Values come back wrapped in :class:`~proxy.model.sensitive.Secret`; errors name paths, never
values, and hvac's exceptions are translated into :class:`~proxy.errors.SecretSourceError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hvac
import hvac.exceptions
import requests

from proxy.errors import SecretMissing, SecretSourceError, VaultUnreachable
from proxy.model.sensitive import Secret

if TYPE_CHECKING:  # a type only: edges do not import the wiring layer
    from proxy.config import VaultConfig


@dataclass(frozen=True, repr=False)
class SecretVersion:
    """One KV v2 version of a secret: its fields (redacting) and version number."""

    fields: Mapping[str, Secret]
    version: int

    def __repr__(self) -> str:
        return f"SecretVersion(fields={sorted(self.fields)}, version={self.version})"


@dataclass(frozen=True)
class SecretMeta:
    """KV v2 metadata of a secret's current version: no secret material.

    ``deleted`` is true when the current version was soft-deleted or destroyed: the account
    must stop signing with it, not keep the copy in memory.
    """

    current_version: int
    created: datetime | None
    deleted: bool


@dataclass(frozen=True)
class TokenLease:
    """What Vault said about our token at login or renewal."""

    ttl_s: int          # 0: never expires (a root token)
    renewable: bool


def parse_vault_time(text: str) -> datetime | None:
    """Vault's RFC 3339 times carry nanoseconds, which ``fromisoformat`` refuses: trim to µs."""
    if not text:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if m is None:
        return None
    frac = (m.group(2) or "")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    when = datetime.fromisoformat(f"{m.group(1)}.{frac}{zone}")
    return when.astimezone(UTC)


def _unreachable(exc: BaseException) -> bool:
    """Connection trouble or a sealed / standby / failing server, as opposed to a refusal."""
    return isinstance(exc, (requests.ConnectionError, requests.Timeout,
                            hvac.exceptions.VaultDown, hvac.exceptions.InternalServerError,
                            hvac.exceptions.BadGateway))


def _failure(what: str, exc: BaseException) -> SecretSourceError:
    if _unreachable(exc):
        return VaultUnreachable(f"{what}: Vault unreachable ({type(exc).__name__})")
    return SecretSourceError(f"{what} failed: {type(exc).__name__}")


def _read_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretSourceError(f"cannot read {what} file {path}: {exc.strerror}") from None


class VaultSecretSource:
    """A logged-in hvac client bound to one KV v2 mount."""

    def __init__(self, cfg: VaultConfig) -> None:
        self.cfg = cfg
        verify: bool | str = str(cfg.ca_file) if cfg.ca_file else True
        self._client = hvac.Client(url=cfg.addr, timeout=cfg.timeout_s, verify=verify)
        self.lease = TokenLease(0, False)

    def __repr__(self) -> str:
        return f"VaultSecretSource(addr={self.cfg.addr!r}, mount={self.cfg.mount!r})"

    def login(self) -> None:
        """Authenticate with the configured method; the token stays inside hvac."""
        cfg = self.cfg
        try:
            if cfg.auth == "token":
                if cfg.token_file:
                    token = _read_file(cfg.token_file, "vault token")
                else:
                    token = os.environ.get("VAULT_TOKEN", "")
                if not token:
                    raise SecretSourceError("no Vault token: set vault.token_file or VAULT_TOKEN")
                self._client.token = token
                try:
                    self.lease = self._lookup_self()
                except hvac.exceptions.Forbidden:
                    raise SecretSourceError(f"Vault at {cfg.addr} rejected the token") from None
            else:
                assert cfg.role_id_file is not None and cfg.secret_id_file is not None
                resp = self._client.auth.approle.login(
                    role_id=_read_file(cfg.role_id_file, "AppRole role_id"),
                    secret_id=_read_file(cfg.secret_id_file, "AppRole secret_id"),
                )
                self.lease = _lease(resp.get("auth") or {})
        except SecretSourceError:
            raise
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _failure(f"Vault login at {cfg.addr}", exc) from None

    def _lookup_self(self) -> TokenLease:
        data = self._client.auth.token.lookup_self().get("data") or {}
        return TokenLease(int(data.get("ttl") or 0), bool(data.get("renewable")))

    def renew_self(self) -> TokenLease:
        """Extend our token's lease (Vault caps it at the role's max TTL)."""
        try:
            resp = self._client.auth.token.renew_self()
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _failure("renewing the Vault token", exc) from None
        self.lease = _lease(resp.get("auth") or {})
        return self.lease

    def token(self) -> str:
        """The current Vault token, for the Transit calls made outside hvac (proxy/keys/transit/signer.py)."""
        return str(self._client.token or "")

    def read(self, path: str, version: int | None = None) -> SecretVersion:
        """Read a KV v2 secret (latest, or ``version``)."""
        try:
            resp: dict[str, Any] = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.cfg.mount, version=version,
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath:
            raise SecretMissing(f"no secret at {self.cfg.mount}/{path}") from None
        except hvac.exceptions.Forbidden:
            raise SecretSourceError(f"Vault denied reading {self.cfg.mount}/{path}") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _failure(f"reading {self.cfg.mount}/{path}", exc) from None
        data = resp["data"]
        fields = {k: Secret(str(v)) for k, v in (data.get("data") or {}).items()}
        return SecretVersion(fields, int(data["metadata"]["version"]))

    def current_version(self, path: str) -> int:
        """The latest version number, from metadata (cheap: no secret material moves)."""
        return self.metadata(path).current_version

    def metadata(self, path: str) -> SecretMeta:
        """The current version's number, creation time and whether it was deleted or destroyed."""
        try:
            meta = self._client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=self.cfg.mount)
        except hvac.exceptions.InvalidPath:
            raise SecretMissing(f"no secret at {self.cfg.mount}/{path}") from None
        except hvac.exceptions.Forbidden:
            raise SecretSourceError(f"Vault denied the metadata of {self.cfg.mount}/{path}") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _failure(f"metadata of {self.cfg.mount}/{path}", exc) from None
        data = meta["data"]
        current = int(data["current_version"])
        version = (data.get("versions") or {}).get(str(current)) or {}
        deleted = current == 0 or bool(version.get("destroyed")) or bool(version.get("deletion_time"))
        return SecretMeta(current, parse_vault_time(str(version.get("created_time") or "")), deleted)

    def exists(self, path: str) -> bool:
        try:
            self.read(path)
        except SecretSourceError as exc:
            if isinstance(exc, SecretMissing):
                return False
            raise
        return True

    def list(self, path: str) -> list[str]:
        """The names under a KV folder ([] when there is none)."""
        try:
            resp = self._client.secrets.kv.v2.list_secrets(path=path, mount_point=self.cfg.mount)
        except hvac.exceptions.InvalidPath:
            return []
        except hvac.exceptions.Forbidden:
            raise SecretSourceError(f"Vault denied listing {self.cfg.mount}/{path}") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _failure(f"listing {self.cfg.mount}/{path}", exc) from None
        return [str(k) for k in (resp.get("data") or {}).get("keys") or []]

    def write(self, path: str, fields: Mapping[str, str]) -> int:
        """Write a new version; returns its number."""
        try:
            resp = self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=dict(fields), mount_point=self.cfg.mount
            )
        except hvac.exceptions.Forbidden:
            raise SecretSourceError(f"Vault denied writing {self.cfg.mount}/{path}") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise _failure(f"writing {self.cfg.mount}/{path}", exc) from None
        return int(resp["data"]["version"])


def _lease(auth: Mapping[str, Any]) -> TokenLease:
    return TokenLease(int(auth.get("lease_duration") or 0), bool(auth.get("renewable")))
