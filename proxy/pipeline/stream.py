"""Private streams through the proxy: a bot's WebSocket to ``/x/{account}{stream path}``.

The bot authenticates at the upgrade with its proxy token, exactly as on REST. The proxy opens
the exchange's private stream and logs in with the account's key; the bot's own login message
(placeholder keys) is answered by the proxy and never forwarded. Subscriptions to private
channels need the ``read`` category and are audited; pings pass; anything else (order entry,
account administration, unknown operations) is refused in the exchange's own stream error
format and never reaches the exchange. Exchange messages pass to the bot unchanged, except the
answer to the proxy's login. When the exchange closes, the bot's socket is closed too, so the
bot reconnects as it would to the exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from starlette.websockets import WebSocket, WebSocketDisconnect

from proxy.errors import (
    BadRequest,
    EndpointForbidden,
    Forbidden,
    NotReady,
    PolicyDenied,
    RateLimited,
    Refusal,
)
from proxy.exchanges.base import Credentials
from proxy.exchanges.streams import PrivateStream, StreamKind, StreamMessage, StreamToken, allowed_channel
from proxy.guards.bucket import TokenBucket
from proxy.model.request import Category, Inbound
from proxy.pipeline.accounts import Account
from proxy.pipeline.auth import TokenVerifier
from proxy.pipeline.decision import Decisions, RequestContext
from proxy.pipeline.http import Receive, Reply, Scope, Send, split_target
from proxy.pipeline.send import Sender
from proxy.policy.model import PolicySet
from proxy.upstream import Upstream

log = logging.getLogger("proxy.stream")

#: how long the exchange may take to answer the proxy's login
LOGIN_TIMEOUT_S = 10.0
#: Each subscription and each refused message of a bot's stream is an audit record with its own
#: fsync: a bot may make this many at once, then this many a second; beyond, its stream is
#: refused (429 rate_limited, rule stream.rate_limit) and closed (1008), so no stream can fill
#: the audit disk or occupy its writer. Logins and pings are not audited and not counted.
AUDITED_BURST = 20
AUDITED_PER_S = 2.0
_DENIAL = "websocket.http.response"


class StreamRelay:
    """Carries bots' private streams for one worker."""

    def __init__(
        self, *, accounts: Mapping[str, Account], policies: Callable[[], PolicySet],
        verifier: TokenVerifier, decisions: Decisions, upstream: Upstream, sender: Sender,
        ready: Callable[[], bool], clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.ready = ready
        self.accounts = accounts
        self.policies = policies
        self.verifier = verifier
        self.decisions = decisions
        self.upstream = upstream
        self.sender = sender
        self.clock_ns = clock_ns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        ctx = RequestContext(request_id=uuid.uuid4().hex, method="WS",
                             path=raw_path.decode("latin-1")[:512], started=time.perf_counter(),
                             category=str(Category.READ))
        try:
            account, stream, creds = self._admit(ctx, scope, raw_path)
            await self.decisions.durable(ctx, "allow", "stream.open", phase="decision")
        except Refusal as refusal:
            await self._deny(ctx, scope, receive, send, refusal)
            return
        ws = WebSocket(scope, receive, send)  # type: ignore[arg-type]
        await ws.accept()
        reason = "closed by the bot"
        try:
            reason = await self._relay(ctx, ws, account, stream, creds)
        except Refusal as refusal:
            reason = refusal.message
            await self.decisions.refused(ctx, refusal)
            await _close(ws, 1011, refusal.message)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = f"the exchange's stream failed ({type(exc).__name__})"
            await _close(ws, 1011, reason)
        finally:
            ctx.error = None
            ctx.stream_close = reason
            self.decisions.queue(self.decisions.record(ctx, "allow", "stream.close", "outcome"))
            log.info("stream %s for %s on %s closed: %s", ctx.request_id, ctx.client, ctx.account, reason)

    def _admit(self, ctx: RequestContext, scope: Scope,
               raw_path: bytes) -> tuple[Account, PrivateStream, Credentials]:
        if not self.ready():
            raise NotReady("the proxy is starting or its secrets are unavailable; retry shortly")
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        ctx.client = self.verifier.client_for(
            [v for k, v in headers if k == "proxy-authorization"], self.clock_ns() // 1_000_000_000)
        account_name, path = split_target(raw_path)
        account = self.accounts.get(account_name) if account_name else None
        policies = self.policies()
        policy = policies.for_client(ctx.client)
        grant = policy.grant_for(account.name) if policy is not None and account is not None else None
        if account is None or grant is None:
            raise Forbidden("no such account, or not granted to this client")
        ctx.account, ctx.exchange, ctx.path = account.name, account.cfg.exchange, path[:512]
        ctx.policy_version = policies.version
        stream = account.exchange.capabilities.private_stream
        if stream is None or path.split("?", 1)[0] != stream.path:
            where = stream.path if stream is not None else "none for this exchange"
            raise EndpointForbidden(f"{path} is not this exchange's private stream (the proxy "
                                    f"carries: {where})")
        if Category.READ not in grant.allow:
            raise PolicyDenied("private streams need the read category", rule="allow")
        # the previous version while the exchange refuses the newest (as on REST)
        creds = self.sender.fallbacks.signing(account) if self.sender.fallbacks is not None else account.creds
        if creds is None:
            raise NotReady(f"the secret for account {account.name} is not loaded")
        ctx.key_version = creds.version
        return account, stream, creds

    async def placeholder_token(self, ctx: RequestContext, account: Account) -> Reply:
        """A bot's REST request for a stream token (category ``read``, allowed by its policy):
        answered here with a placeholder that grants nothing; the exchange never sees it."""
        stream = account.exchange.capabilities.private_stream
        if stream is None or stream.token is None:
            raise EndpointForbidden("this exchange's stream takes no REST token through the proxy")
        await self.decisions.durable(ctx, "allow", "stream.token.placeholder", phase="decision")
        self.decisions.log(ctx, "allow", "stream.token.placeholder", 200, None)
        return Reply(200, (("content-type", "application/json"),), stream.token.placeholder)

    async def _fetch_token(self, ctx: RequestContext, account: Account, stream: PrivateStream,
                           creds: Credentials) -> Mapping[str, str]:
        """The proxy's own stream token: a signed REST request through the normal send path
        (weight-charged, audited as ``stream.token``); it never leaves the proxy."""
        token = stream.token
        if token is None:
            return {}
        inbound = Inbound(method=token.method, raw_path=token.path, raw_query=b"",
                          headers=(("content-type", token.content_type),), body=b"")
        prepared = account.exchange.prepare(inbound)
        fetch = ctx.lookup(prepared)  # the same request id as the stream's open
        reply = await self.sender.stamp_and_send(fetch, account, prepared, creds, "stream.token")
        try:
            if reply.status != 200:
                raise ValueError(reply.status)
            return token.parse(reply.body)
        except ValueError:
            log.warning("the exchange refused the proxy's stream token request: %s",
                        refusal_summary(reply.body))
            raise NotReady("the exchange refused the proxy's stream token request; see the proxy's "
                           "log", rule="stream.token") from None

    async def _relay(self, ctx: RequestContext, ws: WebSocket, account: Account, stream: PrivateStream,
                     creds: Credentials) -> str:
        grant = await self._fetch_token(ctx, account, stream, creds)
        async with self.upstream.connect_stream(_stream_url(account, stream)) as up:
            async with self.sender.stamp(account, creds) as stamp:
                login = stream.login(creds, stamp)
                if login is not None:
                    await up.send_str(login)
                    accepted = await asyncio.wait_for(_login_answer(up, stream), LOGIN_TIMEOUT_S)
                    if not accepted:
                        raise NotReady("the exchange refused the proxy's stream login; see the proxy's "
                                       "log", rule="stream.login")
            to_exchange = asyncio.create_task(self._from_bot(ctx, ws, up, stream, account, creds, grant))
            swap = stream.token.shown(grant) if stream.token is not None and stream.token.shown else None
            to_bot = asyncio.create_task(_from_exchange(up, ws, swap))
            done, pending = await asyncio.wait({to_exchange, to_bot}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            result = next(iter(done)).result()
        if result == "exchange":
            await _close(ws, 1012, "the exchange closed the stream; reconnect")
            return "closed by the exchange"
        if result == "rate_limited":
            return "closed by the proxy: too many subscriptions or refused messages"
        return "closed by the bot"

    async def _from_bot(self, ctx: RequestContext, ws: WebSocket, up: Any, stream: PrivateStream,
                        account: Account, creds: Credentials, grant: Mapping[str, str]) -> str:
        fetched = time.monotonic()
        audited = TokenBucket.full(AUDITED_PER_S, AUDITED_BURST, fetched)
        while True:
            try:
                raw = await ws.receive_text()
            except WebSocketDisconnect:
                return "bot"
            except KeyError:  # a binary frame: no exchange's private stream takes one from a bot
                raw = "\x00"
            refusal: Refusal | None = None
            try:
                message = stream.classify(raw)
            except BadRequest as exc:
                message, refusal = StreamMessage(StreamKind.OTHER, ""), exc
            if message.kind not in (StreamKind.LOGIN, StreamKind.PING) and not audited.take(time.monotonic()):
                await self._refuse(ctx, ws, stream, message, RateLimited(
                    f"more than {AUDITED_BURST} subscriptions or refused messages at once on this stream "
                    f"(at most {AUDITED_PER_S:g}/s after that); reconnect more slowly",
                    retry_after=round(AUDITED_BURST / AUDITED_PER_S), rule="stream.rate_limit"))
                await _close(ws, 1008, "too many subscriptions or refused messages; reconnect more slowly")
                return "rate_limited"
            if refusal is not None:
                await self._refuse(ctx, ws, stream, message, refusal)
                continue
            if message.kind is StreamKind.LOGIN:  # the bot's own login: answered, never forwarded
                await ws.send_text(stream.login_ack(message))
            elif message.kind is StreamKind.PING:
                await up.send_str(raw)
            elif message.kind in (StreamKind.SUBSCRIBE, StreamKind.UNSUBSCRIBE):
                refusal = self._check_channels(ctx, stream, message)
                if refusal is not None:
                    await self._refuse(ctx, ws, stream, message, refusal)
                    continue
                sub = _child(ctx, message)
                token = stream.token
                if token is not None and time.monotonic() - fetched > _validity(grant, token) / 2:  # stale
                    grant, fetched = await self._fetch_token(ctx, account, stream, creds), time.monotonic()
                await self.decisions.durable(sub, "allow", f"stream.{message.kind}", phase="decision")
                async with self.sender.stamp(account, creds) as stamp:
                    await up.send_str(stream.authorize(message, raw, creds, stamp, grant))
            else:
                await self._refuse(ctx, ws, stream, message, EndpointForbidden(
                    f"{message.op!r} is not carried on a private stream through the proxy: only "
                    "login, ping and private-channel subscriptions are; place orders over REST"))

    def _check_channels(self, ctx: RequestContext, stream: PrivateStream,
                        message: StreamMessage) -> Refusal | None:
        policy = self.policies().for_client(ctx.client or "")
        grant = policy.grant_for(ctx.account or "") if policy is not None else None
        if grant is None:  # the grant was removed by a reload while the stream was open
            return Forbidden("no such account, or not granted to this client")
        if Category.READ not in grant.allow:
            return PolicyDenied("private streams need the read category", rule="allow")
        unknown = [c for c in message.channels if not allowed_channel(c, stream.channels)]
        if unknown:
            return EndpointForbidden(f"channels {unknown} are not private read channels the proxy "
                                     f"carries; use {sorted(stream.channels)}")
        return None

    async def _refuse(self, ctx: RequestContext, ws: WebSocket, stream: PrivateStream,
                      message: StreamMessage, refusal: Refusal) -> None:
        await self.decisions.refused(_child(ctx, message), refusal)
        text = f"{refusal.message} (request {ctx.request_id})"
        await ws.send_text(stream.refusal(message, refusal.code, text))

    async def _deny(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send,
                    refusal: Refusal) -> None:
        """Refuse the upgrade: the contract's status and JSON body where the server can send an
        HTTP answer to a WebSocket handshake, else a close with a policy-violation code."""
        reply = await self.decisions.refused(ctx, refusal)
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if _DENIAL in scope.get("extensions", {}):
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
            headers += [(b"x-proxy-request-id", ctx.request_id.encode()),
                        (b"content-length", str(len(reply.body)).encode())]
            await send({"type": "websocket.http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": reply.body})
        else:
            reason = f"{refusal.code}: {refusal.message}"[:120]
            await send({"type": "websocket.close", "code": 1008, "reason": reason})


def _child(ctx: RequestContext, message: StreamMessage) -> RequestContext:
    """One audited stream message: the stream's context with its operation and channels."""
    return dataclasses.replace(ctx, method=f"WS {message.op}"[:32], channels=message.channels or None)


def _validity(grant: Mapping[str, str], token: StreamToken) -> float:
    """How long the proxy's token may be used to subscribe: as the exchange's answer said, else
    as the exchange documents it."""
    try:
        return float(grant["valid_s"])
    except (KeyError, ValueError):
        return token.valid_s


def _stream_url(account: Account, stream: PrivateStream) -> str:
    """The exchange's stream for this account. An account whose ``base_url`` is not the
    exchange's own (an emulator, a gateway) gets its stream from the same host."""
    official = account.exchange.base_url(account.cfg.environment)
    if account.cfg.base_url.rstrip("/") == official.rstrip("/"):
        return stream.url(account.cfg.environment) + stream.path
    parts = urlsplit(account.cfg.base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{stream.path}"


async def _login_answer(up: Any, stream: PrivateStream) -> bool:
    """Wait for the exchange's answer to the proxy's login; messages before it are dropped."""
    async for msg in up:
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        try:
            verdict = stream.login_result(json.loads(msg.data))
        except ValueError:  # not JSON (a text pong): not the login's answer
            continue
        if verdict is not None:
            if not verdict:
                log.warning("the exchange refused the stream login: %s", refusal_summary(msg.data))
            return verdict
    return False


async def _from_exchange(up: Any, ws: WebSocket, swap: tuple[str, str] | None) -> str:
    async for msg in up:
        if msg.type is aiohttp.WSMsgType.TEXT:
            await ws.send_text(msg.data if swap is None else msg.data.replace(*swap))
        elif msg.type is aiohttp.WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
        else:
            break
    return "exchange"


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError):  # already closed
        await ws.close(code, reason[:120])


#: fields of an exchange's refusal that carry its code and reason (never the request it echoes)
_REASON_FIELDS = ("code", "retCode", "ret_msg", "msg", "message", "reason", "status", "event")


def refusal_summary(raw: str | bytes) -> str:
    """The exchange's code and reason from a refused login or token request, for the log.

    Some exchanges echo the refused request back (its API key, expiry and signature); only the
    code and reason fields are kept, and a reason is cut where an echoed JSON request starts."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "an answer that is not JSON"
    found: list[str] = []
    for node in (data, data.get("error") if isinstance(data, dict) else None):
        if not isinstance(node, dict):
            continue
        for key in _REASON_FIELDS:
            value = node.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                found.append(f"{key}={str(value).split('{', 1)[0].strip()[:120]}")
    return ", ".join(found) or "no code or reason in the answer"
