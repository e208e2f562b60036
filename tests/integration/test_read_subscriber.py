"""The read API's one pub/sub subscriber against a real Redis: it stops whenever it is cancelled.

redis-py can swallow a cancellation that lands while it connects (redis-py #2028, #2551); the
subscriber then blocked in get_message forever, and a worker's shutdown (or asyncio.run) hung.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from cart_read.waiters import CartWaiters

# Cancel points from "before the connect" to "while subscribing" to "listening".
DELAYS_S = [0, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.05]


def test_a_cancel_at_any_moment_stops_the_subscriber(redis_url, unique) -> None:
    async def once(delay: float) -> bool:
        waiters = CartWaiters(10, client_factory=lambda: aioredis.Redis.from_url(redis_url),
                              channel=f"c-{unique}")
        waiters.ensure_subscriber()
        task = waiters._task
        assert task is not None
        await asyncio.sleep(delay)
        task.cancel()  # what asyncio.run and a server's shutdown do to leftover tasks
        done, _ = await asyncio.wait({task}, timeout=5)
        return bool(done)

    stuck = [d for d in DELAYS_S * 6 if not asyncio.run(once(d))]
    assert stuck == []


def test_close_stops_a_listening_subscriber_and_wakes_waiters_to_re_read(redis_url,
                                                                         unique) -> None:
    async def run() -> tuple[bool, bool]:
        waiters = CartWaiters(10, client_factory=lambda: aioredis.Redis.from_url(redis_url),
                              channel=f"c-{unique}")
        with waiters.waiting("someone", 5) as waiter:
            for _ in range(100):
                if waiters.connected:
                    break
                await asyncio.sleep(0.02)
            waiter.event.clear()
            await waiters.close()
            return waiter.event.is_set(), waiters._task is None

    woken, stopped = asyncio.run(run())
    assert woken and stopped
