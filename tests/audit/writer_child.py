"""A writer process for the multi-process and kill -9 tests (key via environment, not argv)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from proxy.audit.checkpointer import CheckpointPolicy
from proxy.audit.writer import AuditWriter
from proxy.model.sensitive import Secret
from proxy.model.signers import Ed25519Key, load_pem_private_key


async def main(directory: str, writer_id: str, count: int, concurrency: int) -> None:
    key = Secret(os.environ.pop("AUDIT_TEST_KEY"))
    policy = None
    pem = os.environ.pop("AUDIT_TEST_SIGNING_PEM", None)
    if pem is not None:  # signed checkpoints, and a witness when one is named
        signer = load_pem_private_key(Secret(pem))
        assert isinstance(signer, Ed25519Key)
        witness = os.environ.get("AUDIT_TEST_WITNESS")
        policy = CheckpointPolicy(signer, every_records=50,
                                  witness_dir=Path(witness) if witness else None)
    w = AuditWriter(Path(directory), key, writer_id, max_segment_bytes=64 * 1024,
                    checkpoints=policy)
    await w.start()
    print("started", flush=True)

    async def one(i: int) -> None:
        rid = f"{writer_id}-{i}"
        await w.write({"request_id": rid, "phase": "decision", "decision": "allow",
                       "client": writer_id, "pad": "x" * 300})
        await w.write({"request_id": rid, "phase": "outcome", "upstream_status": 200})

    i = 0
    while count < 0 or i < count:
        n = concurrency if count < 0 else min(concurrency, count - i)
        await asyncio.gather(*(one(i + k) for k in range(n)))
        i += n
    await w.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
