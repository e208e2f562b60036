"""cart_read.resp (the hot read's pipelined hiredis client) against the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis
import uvloop

from cart_read.resp import PipelinedRedis

pytestmark = pytest.mark.integration


# granian runs the app on uvloop when it is installed (its transports are not asyncio's).
@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_hmget_pipelines_concurrent_reads_in_order(redis_url: str, run: Any) -> None:
    r = redis.Redis.from_url(redis_url)
    keys = [f"test-resp-{uuid.uuid4().hex}" for _ in range(200)]
    for i, key in enumerate(keys):
        r.hset(key, mapping={"v": str(i), "doc": f"doc-{i}".encode()})
    missing = f"test-resp-{uuid.uuid4().hex}"

    async def main() -> tuple[list[list[object]], list[object]]:
        client = PipelinedRedis(redis_url, 2.0)
        try:
            got = await asyncio.gather(*(client.hmget(k, ("v", "doc")) for k in keys))
            return list(got), await client.hmget(missing, ("v", "doc"))
        finally:
            await client.aclose()

    got, none = run(main())
    assert got == [[str(i).encode(), f"doc-{i}".encode()] for i in range(len(keys))]
    assert none == [None, None]


def test_a_dropped_connection_fails_then_reconnects(redis_url: str) -> None:
    key = f"test-resp-{uuid.uuid4().hex}"
    redis.Redis.from_url(redis_url).hset(key, "v", "7")

    async def main() -> list[object]:
        client = PipelinedRedis(redis_url, 2.0)
        try:
            assert await client.hmget(key, ("v",)) == [b"7"]
            proto = client._proto
            assert proto is not None and proto.transport is not None
            proto.transport.abort()  # as if Redis went away
            await asyncio.sleep(0)
            return await client.hmget(key, ("v",))
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [b"7"]


def test_a_wrong_type_is_a_response_error_and_the_connection_stays_usable(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    text, hashed = f"test-resp-{uuid.uuid4().hex}", f"test-resp-{uuid.uuid4().hex}"
    r.set(text, "x")
    r.hset(hashed, "v", "1")

    async def main() -> list[object]:
        client = PipelinedRedis(redis_url, 2.0)
        try:
            with pytest.raises(redis.ResponseError):
                await client.hmget(text, ("v",))
            return await client.hmget(hashed, ("v",))
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [b"1"]


def test_a_closed_port_is_a_connection_error() -> None:
    async def main() -> None:
        client = PipelinedRedis("redis://127.0.0.1:1/0", 1.0)
        await client.hmget("k", ("v",))

    with pytest.raises(redis.ConnectionError):
        asyncio.run(main())


# Cancel points from "before the connect" through "connecting / AUTH" to "reading".
CANCEL_DELAYS_S = [0, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01]


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_cancel_while_connecting_or_reading_ends_the_call_and_close_leaves_nothing(
        redis_url: str, run: Any) -> None:
    key = f"test-resp-{uuid.uuid4().hex}"
    redis.Redis.from_url(redis_url).hset(key, "v", "1")

    async def once(delay: float) -> tuple[bool, set[asyncio.Task[Any]]]:
        client = PipelinedRedis(redis_url, 2.0)
        call = asyncio.ensure_future(client.hmget(key, ("v",)))
        await asyncio.sleep(delay)
        call.cancel()
        done, _ = await asyncio.wait({call}, timeout=2)
        async with asyncio.timeout(2):  # closing is bounded
            await client.aclose()
        # Nothing of the client keeps running (asyncio.run would cancel or warn about it).
        return bool(done), asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    for delay in CANCEL_DELAYS_S * 3:
        ended, left = run(once(delay))
        assert ended and left == set(), delay


def test_a_connection_of_another_loop_is_never_used(redis_url: str) -> None:
    key = f"test-resp-{uuid.uuid4().hex}"
    redis.Redis.from_url(redis_url).hset(key, "v", "3")
    client = PipelinedRedis(redis_url, 2.0)

    async def read() -> tuple[list[object], Any]:
        return await client.hmget(key, ("v",)), client._proto

    first, proto1 = asyncio.run(read())  # that loop is closed now, its connection with it
    second, proto2 = asyncio.run(read())
    assert first == second == [b"3"]
    assert proto2 is not proto1 and proto2.loop is not proto1.loop
    asyncio.run(client.aclose())
