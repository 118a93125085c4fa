"""Vault (or OpenBao) KV v2 through hvac: the only place exchange secrets come from.

hvac is synchronous, so this is called at start-up and on change (from a thread), never per
request. Values come back wrapped in :class:`~proxy.sensitive.Secret`; errors name paths, never
values, and hvac's exceptions are translated into :class:`~proxy.errors.SecretSourceError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hvac
import hvac.exceptions
import requests

from proxy.errors import SecretSourceError
from proxy.sensitive import Secret

if TYPE_CHECKING:  # a type only: edges do not import the wiring layer
    from proxy.config import VaultConfig


@dataclass(frozen=True, repr=False)
class SecretVersion:
    """One KV v2 version of a secret: its fields (redacting) and version number."""

    fields: Mapping[str, Secret]
    version: int

    def __repr__(self) -> str:
        return f"SecretVersion(fields={sorted(self.fields)}, version={self.version})"


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
                if not self._client.is_authenticated():
                    raise SecretSourceError(f"Vault at {cfg.addr} rejected the token")
            else:
                assert cfg.role_id_file is not None and cfg.secret_id_file is not None
                self._client.auth.approle.login(
                    role_id=_read_file(cfg.role_id_file, "AppRole role_id"),
                    secret_id=_read_file(cfg.secret_id_file, "AppRole secret_id"),
                )
        except SecretSourceError:
            raise
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise SecretSourceError(f"Vault login at {cfg.addr} failed: {type(exc).__name__}") from None

    def token(self) -> str:
        """The current Vault token, for the Transit calls made outside hvac (proxy/transit.py)."""
        return str(self._client.token or "")

    def read(self, path: str, version: int | None = None) -> SecretVersion:
        """Read a KV v2 secret (latest, or ``version``)."""
        try:
            resp: dict[str, Any] = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.cfg.mount, version=version,
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath:
            raise SecretSourceError(f"no secret at {self.cfg.mount}/{path}") from None
        except hvac.exceptions.Forbidden:
            raise SecretSourceError(f"Vault denied reading {self.cfg.mount}/{path}") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise SecretSourceError(f"reading {self.cfg.mount}/{path} failed: {type(exc).__name__}") from None
        data = resp["data"]
        fields = {k: Secret(str(v)) for k, v in (data.get("data") or {}).items()}
        return SecretVersion(fields, int(data["metadata"]["version"]))

    def current_version(self, path: str) -> int:
        """The latest version number, from metadata (cheap: no secret material moves)."""
        try:
            meta = self._client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=self.cfg.mount)
        except hvac.exceptions.InvalidPath:
            raise SecretSourceError(f"no secret at {self.cfg.mount}/{path}") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise SecretSourceError(f"metadata of {self.cfg.mount}/{path}: {type(exc).__name__}") from None
        return int(meta["data"]["current_version"])

    def exists(self, path: str) -> bool:
        try:
            self.read(path)
        except SecretSourceError as exc:
            if str(exc).startswith("no secret"):
                return False
            raise
        return True

    def write(self, path: str, fields: Mapping[str, str]) -> int:
        """Write a new version; returns its number."""
        try:
            resp = self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=dict(fields), mount_point=self.cfg.mount
            )
        except hvac.exceptions.Forbidden:
            raise SecretSourceError(f"Vault denied writing {self.cfg.mount}/{path}") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            raise SecretSourceError(f"writing {self.cfg.mount}/{path} failed: {type(exc).__name__}") from None
        return int(resp["data"]["version"])
