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
from collections.abc import Callable

from proxy.errors import KeyCheckFailed, ProxyError
from proxy.exchanges.base import Credentials, Exchange
from proxy.exchanges.capabilities import SignedRead
from proxy.model.request import Inbound, Prepared, Stamp
from proxy.state import StateStore
from proxy.upstream import Upstream, UpstreamResponse

#: how long the check waits for the key's nonce lock (a serving proxy may hold it)
NONCE_LOCK_TIMEOUT_S = 10.0


def check_new_key(exchange: Exchange, base_url: str, host: str, creds: Credentials,
                  timeout_s: float = 10.0, store: Callable[[], StateStore] | None = None) -> str:
    """Sign one read with ``creds`` for ``host`` and send it to ``base_url``; the exchange's
    answer summarised, or :class:`KeyCheckFailed` with its reason. ``store`` opens the state
    store: an exchange with strictly increasing nonces gets the key's next nonce from it, under
    the key's lock, as the serving proxies do (never one from the clock that could overtake theirs)."""
    return asyncio.run(_check(exchange, base_url, host, creds, timeout_s, store))


async def _check(exchange: Exchange, base_url: str, host: str, creds: Credentials, timeout_s: float,
                 store: Callable[[], StateStore] | None) -> str:
    name, read = exchange.name, exchange.capabilities.key_check
    headers = (("content-type", "application/json"),) if read.body.startswith(b"{") else ()
    prepared = exchange.prepare(Inbound(read.method, read.path, read.query, headers, read.body))
    upstream = Upstream(timeout_s)
    await upstream.start()
    try:
        unit = exchange.nonce_unit
        if unit is None or store is None:
            now_ms = time.time_ns() // 1_000_000
            nonce = time.time_ns() // 1000 if unit == "us" else now_ms
            response = await _send(exchange, prepared, creds, host, base_url, upstream,
                                   Stamp(now_ms=now_ms, nonce=nonce, unique=str(uuid.uuid4())))
        else:
            states = store()
            key_id = f"{name}:{creds.api_key}"  # the serving proxies' key id (proxy.pipeline.send)
            try:
                async with states.key_lock(key_id, NONCE_LOCK_TIMEOUT_S):
                    nonce = await states.next_nonce(key_id, unit, now_us=time.time_ns() // 1000)
                    response = await _send(exchange, prepared, creds, host, base_url, upstream,
                                           Stamp(now_ms=time.time_ns() // 1_000_000, nonce=nonce,
                                                 unique=str(uuid.uuid4())))
            finally:
                await states.close()
    finally:
        await upstream.close()
    reason = _refused(read, response.status, response.body)
    if reason is not None:
        raise KeyCheckFailed(f"{name} refused a signed {read.method} {read.path} with the new key: {reason}")
    return f"{name} accepted a signed {read.method} {read.path} with the new key"


async def _send(exchange: Exchange, prepared: Prepared, creds: Credentials, host: str, base_url: str,
                upstream: Upstream, stamp: Stamp) -> UpstreamResponse:
    try:
        return await upstream.send(base_url, exchange.sign(prepared, creds, stamp, host))
    except ProxyError as exc:
        raise KeyCheckFailed(f"{exchange.name} could not be reached ({exc})", unreachable=True) from None


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
