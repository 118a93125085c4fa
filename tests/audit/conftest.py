"""Shared helpers for the audit tests: a key, a writer factory, and file surgery."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from proxy.audit import checkpoint
from proxy.audit.writer import AuditWriter
from proxy.model.sensitive import Secret
from proxy.model.signers import Ed25519Key


@pytest.fixture
def key() -> Secret:
    return Secret(secrets.token_hex(32))


@pytest.fixture(scope="session")
def signer() -> Ed25519Key:
    """The checkpoint key (one per session: generating keys is cheap, but fixtures are shared)."""
    return Ed25519Key(ed25519.Ed25519PrivateKey.generate())


def public(signer: Ed25519Key) -> dict[str, ed25519.Ed25519PublicKey]:
    """What an auditor holds: the public key and nothing else."""
    return checkpoint.public_keys_from_pem(checkpoint.public_pem(signer.public_key()))


def decision(i: int, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "request_id": f"req-{i}", "phase": "decision", "client": "bot-a" if i % 2 else "bot-b",
        "account": "binance-main", "exchange": "binance", "method": "POST",
        "path": "/api/v3/order", "category": "trade", "decision": "allow", "rule": "grant",
        "key_version": 1, "policy_version": "p1",
        "intent": {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.01",
                   "price": "50000", "notional": "500"},
    }
    rec.update(extra)
    return rec


def outcome(i: int, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"request_id": f"req-{i}", "phase": "outcome", "upstream_status": 200,
                           "exchange_order_id": str(1000 + i), "upstream_latency_ms": 1.5}
    rec.update(extra)
    return rec


def write_trail(
    directory: Path, key: Secret, writer_id: str = "w1", records: int = 10,
    make: Callable[[int], Mapping[str, Any]] = decision, close: bool = True, **opts: Any,
) -> None:
    """Write ``records`` records through the real async writer."""

    async def run() -> None:
        w = AuditWriter(directory, key, writer_id, **opts)
        await w.start()
        for i in range(records):
            await w.write(make(i))
        if close:
            await w.close()

    asyncio.run(run())


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def put_lines(path: Path, content: list[bytes]) -> None:
    path.write_bytes(b"".join(content))
