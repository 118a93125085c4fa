"""OKX v5 private stream (``/ws/v5/private``): login over ``/users/self/verify``, signed like REST.

Order entry over the socket (``order``, ``batch-orders``, ``cancel-order``, ``amend-order``...)
is not carried: it is refused in OKX's own format, as is any channel that is not private.
"""

from __future__ import annotations

import base64

from proxy.exchanges.base import Credentials
from proxy.exchanges.passphrase_stream import PassphraseLoginStream
from proxy.model.signers import HmacKey


def _sign(creds: Credentials, message: bytes) -> str:
    if not isinstance(creds.key, HmacKey):
        raise TypeError("OKX signs with an HMAC key")
    return base64.b64encode(creds.key.digest(message)).decode()


STREAM = PassphraseLoginStream(
    path="/ws/v5/private",
    channels=frozenset({"account", "positions", "balance_and_position", "liquidation-warning",
                        "account-greeks", "orders", "fills"}),
    live="wss://ws.okx.com:8443", testnet="wss://wspap.okx.com:8443",
    verify_path="/users/self/verify", sign=_sign, ok_code="0", refused_code="60012",
)
