"""``keys rotate``'s check of a new key: one signed read at the exchange before it is written.

Rotating to a key the exchange does not know (a typo, a key not yet activated, a deleted one)
used to take the account down at every proxy within two seconds. The new key now signs one
harmless read first, with the account's real base URL; the exchange's own refusal is shown
and nothing is written. ``--skip-exchange-check`` writes anyway (the exchange unreachable from
where the operator runs the command).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from proxy.errors import KeyCheckFailed, ProxyError
from proxy.exchanges.base import Credentials, Exchange
from proxy.exchanges.capabilities import SignedRead
from proxy.model.request import Inbound, Stamp
from proxy.upstream import Upstream


def check_new_key(exchange: Exchange, base_url: str, host: str, creds: Credentials,
                  timeout_s: float = 10.0) -> str:
    """Sign one read with ``creds`` for ``host`` and send it to ``base_url``; the exchange's
    answer summarised, or :class:`KeyCheckFailed` with its reason."""
    return asyncio.run(_check(exchange, base_url, host, creds, timeout_s))


async def _check(exchange: Exchange, base_url: str, host: str, creds: Credentials, timeout_s: float) -> str:
    name, read = exchange.name, exchange.capabilities.key_check
    headers = (("content-type", "application/json"),) if read.body.startswith(b"{") else ()
    prepared = exchange.prepare(Inbound(read.method, read.path, read.query, headers, read.body))
    now_ms = time.time_ns() // 1_000_000
    nonce = time.time_ns() // 1000 if exchange.nonce_unit == "us" else now_ms
    outbound = exchange.sign(prepared, creds, Stamp(now_ms=now_ms, nonce=nonce, unique=str(uuid.uuid4())),
                             host)
    upstream = Upstream(timeout_s)
    await upstream.start()
    try:
        response = await upstream.send(base_url, outbound)
    except ProxyError as exc:
        raise KeyCheckFailed(f"{name} could not be reached ({exc})", unreachable=True) from None
    finally:
        await upstream.close()
    reason = _refused(read, response.status, response.body)
    if reason is not None:
        raise KeyCheckFailed(f"{name} refused a signed {read.method} {read.path} with the new key: {reason}")
    return f"{name} accepted a signed {read.method} {read.path} with the new key"


def _refused(read: SignedRead, status: int, body: bytes) -> str | None:
    """The exchange's reason for refusing, or None when the read worked."""
    text = body[:300].decode("utf-8", "replace")
    if status != 200:
        return f"HTTP {status} {text}"
    if read.ok is None:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return f"HTTP {status}, not JSON: {text}"
    return None if read.ok(data) else f"HTTP 200 {text}"
