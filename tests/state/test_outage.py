"""Fail closed: an unreachable store refuses with NotReady; service resumes when it returns."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proxy.errors import NotReady
from proxy.state import IdempotencyScope, Owner, open_store
from tests.support.redis_server import RedisServer


def test_redis_stopped_raises_not_ready_then_restarted_works() -> None:
    with RedisServer() as server:
        store = open_store("redis", path=None, url=server.url)

        async def body() -> None:
            first = await store.next_nonce("k", "us")
            server.stop()
            with pytest.raises(NotReady, match="state store unreachable"):
                await store.next_nonce("k", "us")
            with pytest.raises(NotReady):
                await store.begin(IdempotencyScope("c", "a", "o"), "h")
            with pytest.raises(NotReady):
                await store.ping()
            with pytest.raises(NotReady):
                async with store.key_lock("k", 0.5):
                    pass
            server.start()  # same port, empty (no persistence)
            await store.ping()
            assert await store.next_nonce("k", "us") > first  # the clock carries on
            assert isinstance(await store.begin(IdempotencyScope("c", "a", "o"), "h"), Owner)
            await store.close()

        asyncio.run(body())


def test_redis_never_reachable_raises_not_ready() -> None:
    server = RedisServer()  # never started: nothing listens on its port
    store = open_store("redis", path=None, url=server.url)

    async def body() -> None:
        with pytest.raises(NotReady, match="state store unreachable"):
            await store.add_to_window("w", 1, 60)
        await store.close()

    asyncio.run(body())


def test_sqlite_unopenable_path_raises_not_ready(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NotReady, match="state store unreachable"):
        open_store("sqlite", path=blocker / "state.db", url=None)


def test_open_store_refuses_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend"):
        open_store("memcached", path=None, url=None)
    with pytest.raises(ValueError, match="needs url"):
        open_store("redis", path=None, url=None)
