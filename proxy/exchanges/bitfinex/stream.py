"""Bitfinex v2 authenticated stream (``wss://api.bitfinex.com/ws/2``): ``auth`` with
``authPayload = "AUTH" + nonce`` signed hex HMAC-SHA384, the nonce drawn from the key's
strictly increasing REST nonces. Account data then arrives on channel 0 without subscribing.

Inputs over the socket (``[0, "on", null, {...}]`` new order, ``oc``, ``ou``, ``oc_multi``,
``ox_multi``, ``fon``, ``calc``...) are not carried: they are refused as Bitfinex's
``{"event": "error", "msg", "code"}``, and so are public-channel subscriptions (use the
exchange's public stream for those).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proxy.errors import BadRequest
from proxy.exchanges.base import Credentials, Environment
from proxy.exchanges.streams import ForwardsSubscriptions, StreamKind, StreamMessage, parse_bot_message
from proxy.model.request import Stamp
from proxy.model.signers import HmacKey

#: Bitfinex's code for a request it does not take
REFUSED_CODE = 10000


@dataclass(frozen=True)
class BitfinexStream(ForwardsSubscriptions):
    path: str = "/ws/2"
    #: none to subscribe: an authenticated socket receives the account's channel 0 by itself
    channels: frozenset[str] = frozenset()

    def url(self, environment: Environment) -> str:
        return "wss://api.bitfinex.com"

    def login(self, creds: Credentials, stamp: Stamp) -> str:
        if not isinstance(creds.key, HmacKey):
            raise TypeError("Bitfinex signs with an HMAC key")
        payload = f"AUTH{stamp.nonce}"
        signature = creds.key.hexdigest(payload.encode(), "sha384")
        return json.dumps({"event": "auth", "apiKey": creds.api_key, "authNonce": stamp.nonce,
                           "authPayload": payload, "authSig": signature})

    def login_result(self, message: Any) -> bool | None:
        if not isinstance(message, dict) or message.get("event") != "auth":
            return None
        return message.get("status") == "OK"

    def classify(self, raw: str) -> StreamMessage:
        message = parse_bot_message(raw)
        if isinstance(message, list):  # an input on channel 0: it would act
            op = message[1] if len(message) > 1 and isinstance(message[1], str) else "input"
            return StreamMessage(StreamKind.OTHER, op)
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise BadRequest('a Bitfinex stream message is an array or an object with "event"')
        event = message["event"]
        cid = message.get("cid")
        request_id = str(cid) if isinstance(cid, int) and not isinstance(cid, bool) else None
        if event == "auth":
            return StreamMessage(StreamKind.LOGIN, event, request_id=request_id)
        if event == "ping":
            return StreamMessage(StreamKind.PING, event, request_id=request_id)
        if event in ("subscribe", "unsubscribe"):
            channel = message.get("channel")
            kind = StreamKind.SUBSCRIBE if event == "subscribe" else StreamKind.UNSUBSCRIBE
            return StreamMessage(kind, event, (str(channel),), request_id)
        return StreamMessage(StreamKind.OTHER, event, request_id=request_id)

    def login_ack(self, message: StreamMessage) -> str:
        return json.dumps({"event": "auth", "status": "OK", "chanId": 0, "userId": 0,
                           "auth_id": "signing-proxy", "caps": {}})

    def refusal(self, message: StreamMessage, code: str, text: str) -> str:
        return json.dumps({"event": "error", "msg": f"{code}: {text}", "code": REFUSED_CODE})


STREAM = BitfinexStream()
