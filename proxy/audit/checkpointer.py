"""A writer's Merkle tree and its signed checkpoints: when to sign, and where they go.

The writer feeds every durable line in (:meth:`Checkpointer.add`) and asks for a checkpoint
after each batch, seal and close; this class decides whether one is due, signs it and appends
it to the local checkpoint file and the witness (docs/audit.md, "Signed checkpoints"). It runs
on the writer's I/O thread under the writer's lock, so lines are always durable before a
checkpoint covers them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.audit import checkpoint, merkle, witness

DEFAULT_CHECKPOINT_RECORDS = 1000
DEFAULT_CHECKPOINT_S = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointPolicy:
    """When and with what the writer signs checkpoints, and where else it leaves them."""

    signer: checkpoint.CheckpointSigner
    every_records: int = DEFAULT_CHECKPOINT_RECORDS
    every_s: float = DEFAULT_CHECKPOINT_S
    #: an existing folder on another volume the proxy can only append to; None: local only
    witness_dir: Path | None = None
    #: one more witness (Vault KV): handed each checkpoint once it is stored; must not block
    publish: Callable[[checkpoint.Checkpoint], None] | None = None


class Checkpointer:
    """The tree of one writer's lines (two hashes per line) and its checkpoint schedule."""

    def __init__(self, policy: CheckpointPolicy | None, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.tree = merkle.CompactTree()
        self._clock = clock
        self._signed_size = 0
        self._signed_at = clock()
        #: why the last checkpoint could not be signed or stored (None: the last one was)
        self.error: str | None = None

    @property
    def enabled(self) -> bool:
        return self.policy is not None

    @property
    def frontier(self) -> tuple[bytes, ...] | None:
        """The tree's right edge, for the next open record (None when not checkpointing)."""
        return self.tree.frontier if self.policy is not None else None

    def add(self, line: bytes) -> None:
        """One durable line of the chain (without its newline)."""
        if self.policy is not None:
            self.tree.append(merkle.leaf_hash(line))

    def add_leaves(self, leaves: list[bytes]) -> None:
        for leaf in leaves:
            self.tree.append(leaf)

    def due(self, *, force: bool = False) -> bool:
        policy = self.policy
        if policy is None or self.tree.size == self._signed_size:
            return False
        return (force or self.tree.size - self._signed_size >= policy.every_records
                or self._clock() - self._signed_at >= policy.every_s)

    def sign(self, directory: Path, trail_id: str, writer: str, ts: str) -> None:
        """Sign the tree of every line so far; store it locally and in the witness.

        A failure (Vault Transit unreachable, witness volume full) does not stop the writer: the
        lines are durable and HMAC-chained, and the next checkpoint covers them. It is logged and
        kept in ``error``.
        """
        policy = self.policy
        if policy is None or self.tree.size == self._signed_size:
            return
        size = self.tree.size
        try:
            cp = checkpoint.sign(policy.signer, trail=trail_id, writer=writer, size=size,
                                 root=self.tree.root(), ts=ts)
        except Exception as exc:  # Vault Transit down, denied...: never the key in the message
            self._failed(f"signing failed ({type(exc).__name__}: {exc})")
            return
        line = cp.line()
        try:
            witness.append(witness.local_path(directory, writer), line)
        except OSError as exc:
            self._failed(f"writing the checkpoint failed: {exc.strerror or exc}")
            return
        self._signed_size, self._signed_at = size, self._clock()
        self.error = None
        if policy.publish is not None:
            try:
                policy.publish(cp)
            except Exception as exc:  # a witness's trouble is reported, never the writer's
                self._failed(f"the extra witness refused the checkpoint ({type(exc).__name__})")
        if policy.witness_dir is not None:
            try:
                witness.append(witness.witness_path(policy.witness_dir, trail_id, writer), line)
            except OSError as exc:
                self._failed(f"the witness at {policy.witness_dir} is not writable: "
                             f"{exc.strerror or exc}")

    def _failed(self, reason: str) -> None:
        if reason != self.error:
            log.error("audit checkpoint: %s; records are still written and HMAC-chained", reason)
        self.error = reason


__all__ = ["DEFAULT_CHECKPOINT_RECORDS", "DEFAULT_CHECKPOINT_S", "CheckpointPolicy", "Checkpointer"]
