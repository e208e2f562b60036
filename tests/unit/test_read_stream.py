"""The cart event stream (SSE) over fake stores, driven through the ASGI app directly (no I/O):
first the current cart, then each newer version once, heartbeats, resume, clean disconnects."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cart_read import metrics
from cart_read.app import create_app
from cart_read.config import Config
from cart_read.waiters import CartWaiters
from tests.support.asgi_stream import Stream, scope
from tests.support.read_fakes import FakePool, FakeRedis, cart

CFG = Config(redis_retry_ms=0, stream_heartbeat_s=0.2, stream_retry_ms=1500)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_current_cart_then_each_new_version_once() -> None:
    r = FakeRedis()
    first = r.put(cart(version=3, offset=10))
    waiters = CartWaiters(10)
    app = create_app(CFG, redis=r, db_pool=FakePool(), waiter=waiters)

    async def scenario() -> None:
        s = Stream(app, scope("/api/v1/123/events"))
        start = await s.start()
        assert start["status"] == 200
        headers = dict(start["headers"])
        assert headers[b"content-type"].startswith(b"text/event-stream")
        assert headers[b"cache-control"] == b"no-store"
        assert await s.chunk() == b"retry: 1500\n\n"
        assert await s.chunk() == b"id: 3\ndata: " + first + b"\n\n"
        assert (len(waiters), waiters.streams) == (1, 1)
        # A notification without a new version (a re-warm, say) sends nothing.
        waiters.notify("123", 10, 2)
        newer = r.put(cart(version=4, offset=11))
        waiters.notify("123", 11, 2)
        assert await s.chunk() == b"id: 4\ndata: " + newer + b"\n\n"
        await s.close()
        assert (len(waiters), waiters.streams) == (0, 0)

    run(scenario())


def test_a_heartbeat_comment_while_nothing_changes() -> None:
    r = FakeRedis()
    r.put(cart(version=3))
    app = create_app(CFG, redis=r, db_pool=FakePool(), waiter=CartWaiters(10))

    async def scenario() -> None:
        s = Stream(app, scope("/api/v1/123/events"))
        await s.start()
        await s.chunk()
        await s.chunk()
        assert await s.chunk(timeout=2) == b": heartbeat\n\n"
        await s.close()

    run(scenario())


@pytest.mark.parametrize("resume", [
    {"headers": [(b"last-event-id", b"4")]},
    {"query": b"lastEventId=4"},
])
def test_resume_after_last_event_id_sends_only_newer_versions(resume: dict[str, Any]) -> None:
    r = FakeRedis()
    r.put(cart(version=4, offset=11))
    waiters = CartWaiters(10)
    app = create_app(CFG, redis=r, db_pool=FakePool(), waiter=waiters)

    async def scenario() -> None:
        s = Stream(app, scope("/api/v1/123/events", **resume))
        await s.start()
        assert await s.chunk() == b"retry: 1500\n\n"
        newer = r.put(cart(version=5, offset=12))
        await asyncio.sleep(0.05)
        waiters.notify("123", 12, 2)
        # Version 4 (the client has it) is never sent again.
        assert await s.chunk() == b"id: 5\ndata: " + newer + b"\n\n"
        await s.close()

    run(scenario())


def test_an_unknown_customer_gets_its_first_cart_when_it_lands() -> None:
    r = FakeRedis()
    waiters = CartWaiters(10)
    app = create_app(CFG, redis=r, db_pool=FakePool(), waiter=waiters)

    async def scenario() -> None:
        s = Stream(app, scope("/api/v1/123/events"))
        await s.start()
        await s.chunk()
        doc = r.put(cart(version=1))
        waiters.notify("123", 10, 2)
        assert await s.chunk() == b"id: 1\ndata: " + doc + b"\n\n"
        await s.close()

    run(scenario())


def test_many_streams_opened_and_dropped_leave_nothing_behind() -> None:
    r = FakeRedis()
    r.put(cart())
    waiters = CartWaiters(10_000)
    app = create_app(CFG, redis=r, db_pool=FakePool(), waiter=waiters)

    async def scenario() -> None:
        tasks_before = len(asyncio.all_tasks())
        gauge_before = metrics.STREAMS._value.get()
        streams = [Stream(app, scope("/api/v1/123/events")) for _ in range(1000)]
        for s in streams:
            await s.start()
            await s.chunk()
            await s.chunk()
        assert waiters.streams == 1000
        assert metrics.STREAMS._value.get() == gauge_before + 1000
        await asyncio.gather(*(s.close() for s in streams))
        assert (len(waiters), waiters.streams) == (0, 0)
        assert metrics.STREAMS._value.get() == gauge_before
        assert len(asyncio.all_tasks()) == tasks_before

    run(scenario())


def test_bad_last_event_id_and_unknown_parameters_are_400() -> None:
    app = create_app(CFG, redis=FakeRedis(), db_pool=FakePool(), waiter=CartWaiters(10))

    async def one(sc: dict[str, Any]) -> int:
        s = Stream(app, sc)
        status = (await s.start())["status"]
        await s.close()
        return status

    assert run(one(scope("/api/v1/123/events", headers=[(b"last-event-id", b"x")]))) == 400
    assert run(one(scope("/api/v1/123/events", query=b"since=1"))) == 400
    assert run(one(scope("/api/v1/a%20b/events"))) in (400, 404)
