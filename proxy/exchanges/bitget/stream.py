"""Bitget v2 private stream (``/v2/ws/private``): login over ``/user/verify``, signed like REST
(HMAC or RSA, base64). Order entry over the socket (``trade``) is not carried: it is refused in
Bitget's own format, as is any channel that is not private."""

from __future__ import annotations

from proxy.exchanges.base import Credentials
from proxy.exchanges.passphrase_stream import PassphraseLoginStream


def _sign(creds: Credentials, message: bytes) -> str:
    from proxy.exchanges.bitget import signature_for  # the package imports this module

    return signature_for(creds, message)


STREAM = PassphraseLoginStream(
    path="/v2/ws/private",
    channels=frozenset({"account", "orders", "fill", "positions", "orders-algo", "plan-order"}),
    live="wss://ws.bitget.com", testnet="wss://wspap.bitget.com",
    verify_path="/user/verify", sign=_sign, ok_code=0, refused_code=30001,
)
