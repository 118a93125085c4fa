"""Every window-based emulator can run its clock away from the host's (``skew_ms``), and the
proxy's tracker, over real HTTP, measures exactly that skew from the emulator's server-time
endpoint (to within half a round trip)."""

from __future__ import annotations

import asyncio
import importlib

import pytest

from proxy import exchanges
from proxy.guards.clock import ExchangeClock, targets_for
from proxy.upstream import Upstream
from proxy_devkit.emulator.server import BackgroundServer

FIELDS = {
    "binance": {"api_key": "binanceSkewKey0123", "api_secret": "s" * 64},
    "bybit": {"api_key": "bybit_skew_key_0123", "api_secret": "bybit-skew-secret-0123456789"},
    "okx": {"api_key": "okx-skew-key", "api_secret": "OKXSKEWSECRET0123", "passphrase": "Skew1!"},
    "bitget": {"api_key": "bg_skew_key", "api_secret": "bg-skew-secret-0123", "passphrase": "Skew1"},
    "coinbase": {"api_key": "organizations/o/apiKeys/k", "api_secret": ""},
    "deribit": {"api_key": "drbSkewClient", "api_secret": "deribit-skew-secret-0123456789"},
}


def _emulator(name: str) -> tuple[object, object]:
    module = importlib.import_module(f"proxy_devkit.emulator.{name}")
    fields = dict(FIELDS[name])
    if name == "coinbase":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        fields["api_secret"] = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()).decode()
    state, app = module.create({fields["api_key"]: fields})
    return state, app


@pytest.mark.parametrize("name", list(FIELDS))
@pytest.mark.parametrize("skew_ms", [300_000, -180_000, 0])
def test_emulator_clock_skew_is_what_the_tracker_measures(name: str, skew_ms: int) -> None:
    state, app = _emulator(name)
    state.skew_ms = skew_ms  # type: ignore[attr-defined]
    with BackgroundServer(app) as server:
        async def measure() -> tuple[int, float]:
            upstream = Upstream(5.0)
            await upstream.start()
            try:
                clock = ExchangeClock(upstream, targets_for({"acct": (server.url, exchanges.get(name), True)}))
                measured = await clock.measure(clock.targets["acct"])
                assert measured is not None, clock.errors
                return clock.offset_ms("acct"), measured.rtt_ms
            finally:
                await upstream.close()

        offset, rtt_ms = asyncio.run(measure())
    # A sample is good to half its round trip, and samples over 1 s are dropped: never off by more.
    assert abs(offset - skew_ms) <= 502, (name, offset, skew_ms, rtt_ms)
