"""The optional Vault witness of audit checkpoints (``audit.witness_vault = true``).

Each writer's newest checkpoint goes to KV ``{proxy_path}/audit-witness/{trail}/{writer}``
(field ``checkpoint``: the checkpoint's JSON line); KV v2 keeps the earlier ones as versions.
The serving proxy may create and update there but not delete, destroy or read, and someone
who can rewrite the audit volume cannot reach Vault at all, so a trail cut or rolled back
together with its local checkpoints still meets the newest checkpoint here (docs/audit.md).

Vault calls run on a thread of their own: the audit writer only hands over the checkpoint,
so a slow or unreachable Vault never holds up an audit record. Only the newest checkpoint
per writer is kept waiting: a newer one supersedes an unsent older one.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from proxy.audit import checkpoint
from proxy.errors import CheckpointError, SecretSourceError

if TYPE_CHECKING:  # annotations only: keys/ sits below the configuration layer
    from proxy.config import VaultConfig
    from proxy.keys.vault import VaultSecretSource

AUDIT_WITNESS = "audit-witness"
RETRY_S = 5.0

log = logging.getLogger(__name__)


def witness_folder(vault: VaultConfig, trail_id: str) -> str:
    return vault.own(f"{AUDIT_WITNESS}/{trail_id}")


class VaultWitness:
    """Publishes checkpoints to Vault KV from a background thread."""

    def __init__(self, source: VaultSecretSource, vault: VaultConfig) -> None:
        self._source, self._vault = source, vault
        self._cond = threading.Condition()
        self._pending: dict[str, str] = {}
        self._stopping = False
        #: why the last publication failed (None: the last one worked)
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="audit-vault-witness", daemon=True)
        self._thread.start()

    def offer(self, cp: checkpoint.Checkpoint) -> None:
        """Queue ``cp`` for Vault; returns at once (called on the audit writer's I/O thread)."""
        path = f"{witness_folder(self._vault, cp.trail)}/{cp.writer}"
        with self._cond:
            self._pending[path] = cp.line().decode().rstrip("\n")
            self._cond.notify()

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is pending (best effort, within ``timeout_s``) and stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, {}
            failed = self._send(batch)
            if failed:
                with self._cond:
                    for path, line in failed.items():
                        self._pending.setdefault(path, line)  # unless a newer one came
                    if self._stopping:
                        return
                    self._cond.wait(RETRY_S)

    def _send(self, batch: dict[str, str]) -> dict[str, str]:
        failed: dict[str, str] = {}
        for path, line in batch.items():
            try:
                self._source.write(path, {"checkpoint": line})
            except SecretSourceError as exc:
                if str(exc) != self.error:
                    log.error("audit checkpoint not witnessed in Vault: %s; retrying", exc)
                self.error = str(exc)
                failed[path] = line
            else:
                self.error = None
        return failed


def read_witnessed(
    source: VaultSecretSource, vault: VaultConfig, trail_id: str,
) -> list[tuple[str, checkpoint.Checkpoint | None]]:
    """(writer, its newest witnessed checkpoint, None if malformed) for one trail."""
    folder = witness_folder(vault, trail_id)
    found: list[tuple[str, checkpoint.Checkpoint | None]] = []
    for writer in sorted(source.list(folder)):
        value = source.read(f"{folder}/{writer}").fields.get("checkpoint")
        try:
            found.append((writer, checkpoint.parse_line(value.reveal().encode()) if value else None))
        except CheckpointError:
            found.append((writer, None))
    return found
