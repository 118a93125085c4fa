"""OKX's private stream (``/ws/v5/private``) in the emulator: the passphrase login checked as
OKX checks it (base64 HMAC-SHA256 over ``{timestamp}GET/users/self/verify``) and OKX's codes."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING

from proxy_devkit.emulator import passphrase_stream

if TYPE_CHECKING:
    from proxy_devkit.emulator.okx import OkxKey


def _stream_verify(key: OkxKey, message: bytes, sign: str) -> bool:
    expected = base64.b64encode(hmac.new(key.secret.encode(), message, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, sign)


#: OKX's private stream: its checks and its error codes
STREAM_SPEC = passphrase_stream.Spec(
    verify_path="/users/self/verify", verify=_stream_verify, ok_code="0",
    channels=frozenset({"account", "positions", "balance_and_position", "orders", "fills",
                        "liquidation-warning", "account-greeks"}),
    login_failed=("60009", "Login failed."), not_logged_in=("60011", "Please log in"),
    bad_channel="60018", illegal="60012",
)
