"""A host clock minutes away from the exchange's: every window-based exchange still accepts.

Each strict emulator runs its clock skewed (+5 min, then -3 min) for both its server-time
endpoint and its timestamp checks. Accounts that follow the exchange's clock (the default) are
accepted; the same exchanges with ``exchange_clock = false`` (host clock) are rejected by the
emulator's own time check, which shows the skew is real and the correction is what helps.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proxy import exchanges
from tests.support.refusals import proxy_error
from tests.support.stack import AccountSpec, Stack, start_stack

pytestmark = pytest.mark.integration

PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption()).decode()
FIELDS = {
    "binance": {"api_key": "binanceClockKey0123", "api_secret": "c" * 64},
    "bybit": {"api_key": "bybit_clock_key_0123", "api_secret": "bybit-clock-secret-0123456789abcdef"},
    "okx": {"api_key": "okx-clock-key-0123", "api_secret": "OKXCLOCKSECRET0123456789ABCDEF",
            "passphrase": "ClockPass1!"},
    "bitget": {"api_key": "bg_clock_key_0123", "api_secret": "bg-clock-secret-0123456789abcdef",
               "passphrase": "ClockPass1"},
    "coinbase": {"api_key": "organizations/org-clock/apiKeys/key-clock", "api_secret": PEM},
    "deribit": {"api_key": "drbClockClient1", "api_secret": "deribit-clock-secret-0123456789"},
}
#: one signed read per exchange
READS = {
    "binance": "/api/v3/account",
    "bybit": "/v5/account/wallet-balance?accountType=UNIFIED",
    "okx": "/api/v5/account/balance",
    "bitget": "/api/v2/spot/account/assets",
    "coinbase": "/api/v3/brokerage/accounts",
    "deribit": "/api/v2/private/get_account_summary?currency=BTC",
}
#: exchanges whose keys the proxy asks for their permissions at start (proxy/guards/key_vetting.py)
KEY_CHECKED = {"binance", "bybit", "okx", "coinbase"}
ACCOUNTS = [AccountSpec(f"{x}-synced", x, FIELDS[x]) for x in READS] + [
    AccountSpec(f"{x}-host", x, FIELDS[x], extra_toml="exchange_clock = false") for x in READS
]
POLICY = 'version = 1\nclient = "bot"\n' + "".join(
    f'\n[[grants]]\naccount = "{a.name}"\nallow = ["read"]\n' for a in ACCOUNTS
)


def _skew_and_start(stack: Stack, skew_ms: int) -> dict[str, object]:
    stack.stop_proxy()
    for account in ACCOUNTS:
        stack.emulator(account.name).skew_ms = skew_ms
    stack.start_proxy()
    stack.wait_ready()
    clocks: dict[str, object] = httpx.get(stack.admin_url + "/readyz", timeout=10).json()["exchange_clock"]
    return clocks


def _read(stack: Stack, account: str, exchange: str, token: str) -> tuple[int, bool, str]:
    before = len(stack.emulator(account).recorder.all())
    r = httpx.get(f"{stack.proxy_url}/x/{account}{READS[exchange]}",
                  headers={"Proxy-Authorization": f"Bearer {token}"}, timeout=30)
    received = stack.emulator(account).recorder.all()[before:]
    assert len(received) == 1, f"{account}: one request should reach the exchange"
    return r.status_code, received[0].accepted, received[0].error


@pytest.mark.parametrize("skew_ms", [5 * 60_000, -3 * 60_000], ids=["plus5min", "minus3min"])
def test_exchange_clock_skewed_exchange_accepts_synced_accounts(tmp_path: Path, skew_ms: int) -> None:
    with start_stack(tmp_path, ACCOUNTS, {"bot": POLICY}, start_proxy=False) as stack:
        clocks = _skew_and_start(stack, skew_ms)
        token = stack.token("bot")
        for exchange, path in READS.items():
            measured = clocks[f"{exchange}-synced"]
            assert isinstance(measured, dict)
            assert abs(int(measured["offset_ms"]) - skew_ms) < 2000, (exchange, measured)
            assert f"{exchange}-host" not in clocks, "exchange_clock = false is not tracked"

            status, accepted, error = _read(stack, f"{exchange}-synced", exchange, token)
            assert accepted and status == 200, (exchange, status, error)

            host = f"{exchange}-host"
            if exchange in KEY_CHECKED:
                # The key-permission check at start is signed with the host clock too, so the
                # emulator rejected it and the proxy refuses the key (fail closed): nothing more
                # is sent.
                seen = stack.emulator(host).recorder.all()
                assert seen and not any(rec.accepted for rec in seen), (exchange, seen)
                r = httpx.get(f"{stack.proxy_url}/x/{host}{path}",
                              headers={"Proxy-Authorization": f"Bearer {token}"}, timeout=30)
                assert r.status_code == 503 and proxy_error(r)["rule"] == "key_permissions", r.text
                # only the vetting's own retries (backing off) may have reached it, never the bot's read
                probe = exchanges.get(exchange).capabilities.key_permissions
                assert probe is not None
                assert all(rec.path == probe.path for rec in stack.emulator(host).recorder.all())
                continue
            status, accepted, error = _read(stack, host, exchange, token)
            assert not accepted, f"{exchange}: the emulator must reject a timestamp {skew_ms} ms off"
        metrics = httpx.get(stack.admin_url + "/metrics", timeout=10).text
        assert 'proxy_exchange_clock_offset_ms{account="binance-synced"' in metrics


def test_exchange_clock_unskewed_host_clock_still_works(tmp_path: Path) -> None:
    """Without skew both kinds of account are accepted (the negative control above is fair)."""
    accounts = [a for a in ACCOUNTS if a.exchange in ("binance", "okx")]
    policy = 'version = 1\nclient = "bot"\n' + "".join(
        f'\n[[grants]]\naccount = "{a.name}"\nallow = ["read"]\n' for a in accounts
    )
    with start_stack(tmp_path, accounts, {"bot": policy}) as stack:
        token = stack.token("bot")
        for account in accounts:
            status, accepted, error = _read(stack, account.name, account.exchange, token)
            assert accepted and status == 200, (account.name, status, error)

