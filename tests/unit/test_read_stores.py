"""The read API's store handles: made on first use in the running event loop, made again in
another loop (a handle of another loop cannot be used there), never made without a loop."""

from __future__ import annotations

import asyncio
from typing import Any

from cart_read.config import Config
from cart_read.stores import Stores


def test_the_redis_client_belongs_to_its_event_loop() -> None:
    stores = Stores(Config(redis_connections=5))

    async def twice() -> tuple[Any, Any]:
        return stores.redis, stores.redis

    a1, a2 = asyncio.run(twice())
    b1, _ = asyncio.run(twice())
    assert a1 is a2 and b1 is not a1
    # Five cart reads at once; the pool has spare connections for re-warms and pings.
    assert b1.connection_pool.max_connections > 5

    async def slots() -> int:
        return stores.read_slots._value

    assert asyncio.run(slots()) == 5


def test_injected_handles_are_used_as_they_are() -> None:
    fake, pool = object(), object()
    stores = Stores(Config(), redis_client=fake, db_pool=pool)
    assert stores.redis is fake and stores.reader is fake
    assert asyncio.run(stores.db()) is pool
