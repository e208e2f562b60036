"""The event loop's Redis client (redis.asyncio) and PostgreSQL pool (psycopg async), made lazily.

One granian worker runs one event loop; its handles are made on first use in that loop, so no
socket crosses a fork or a loop (tests build apps on several loops: a handle made on another
loop is dropped and made again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import psycopg
import redis
import redis.asyncio as aioredis
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from cart_read.config import Config

log = logging.getLogger(__name__)

POOL_WAIT_S = 10.0  # the longest a Redis call queues for one of the loop's connections


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    set_json_loads(orjson.loads, conn)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Stores:
    """Redis and PostgreSQL handles for one event loop, plus a short Redis circuit breaker.

    Injected handles (tests) are used as they are.
    """

    def __init__(self, config: Config, *, redis_client: Any = None, db_pool: Any = None) -> None:
        self.config = config
        self._injected_redis = redis_client
        self._injected_pool = db_pool
        self._loop: asyncio.AbstractEventLoop | None = None
        self._redis: Any = None
        self._pool: Any = None
        self._redis_down_until = 0.0

    def _same_loop(self) -> None:
        loop = _running_loop()
        if loop is not self._loop:
            # Handles of another loop (or a forked parent) cannot be used here; drop them.
            self._loop = loop
            self._redis = None
            self._pool = None

    @property
    def redis(self) -> Any:
        """The loop's redis.asyncio client: a blocking pool, so a burst of woken waiters queues
        for a connection instead of failing with "too many connections"."""
        if self._injected_redis is not None:
            return self._injected_redis
        self._same_loop()
        if self._redis is None:
            timeout = self.config.redis_timeout_ms / 1000
            pool = aioredis.BlockingConnectionPool.from_url(
                self.config.redis_url,
                max_connections=self.config.redis_connections,
                # Queueing for a free connection is normal in a burst (thousands of waiters
                # woken at once): it must not count as Redis failing (which the breaker would
                # answer by sending reads to PostgreSQL).
                timeout=POOL_WAIT_S,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # A socket broken since its last use (e.g. Redis restarted): one reconnect,
                # then the failure is real (and the breaker sends reads to PostgreSQL).
                retry_on_error=[redis.ConnectionError],
            )
            self._redis = aioredis.Redis(connection_pool=pool)
        return self._redis

    @property
    def reader(self) -> Any:
        """What reads carts (`hmget`)."""
        return self.redis

    async def db(self) -> Any:
        """The loop's psycopg AsyncConnectionPool (opened without waiting: a down database must
        not stop Redis reads)."""
        if self._injected_pool is not None:
            return self._injected_pool
        self._same_loop()
        if self._pool is None:
            timeout = self.config.pg_timeout_ms / 1000
            pool = AsyncConnectionPool(
                self.config.database_url,
                min_size=1,
                max_size=self.config.pg_connections,
                timeout=timeout,
                kwargs={"autocommit": True, "connect_timeout": max(1, round(timeout))},
                configure=_configure,
                open=False,
                name="cart_read",
            )
            self._pool = pool
            await pool.open(wait=False)
        return self._pool

    def redis_usable(self) -> bool:
        """False for a short while after a Redis failure, so reads skip straight to PostgreSQL."""
        return time.monotonic() >= self._redis_down_until

    def redis_failed(self, exc: Exception) -> None:
        """Note a Redis failure: skip Redis for redis_retry_ms."""
        if self.redis_usable():
            log.warning("redis unavailable, reading from PostgreSQL: %s", exc)
        self._redis_down_until = time.monotonic() + self.config.redis_retry_ms / 1000

    async def close(self) -> None:
        """Close what this loop opened."""
        if self._loop is not None and self._loop is _running_loop():
            if self._pool is not None:
                await self._pool.close()
            if self._redis is not None:
                await self._redis.aclose()
        self._redis = None
        self._pool = None
