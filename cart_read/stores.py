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
from cart_read.resp import PipelinedRedis, supports

log = logging.getLogger(__name__)

SPARE_CONNECTIONS = 16


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
        self._reader: PipelinedRedis | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pool: Any = None
        self._redis_down_until = 0.0

    def _same_loop(self) -> None:
        loop = _running_loop()
        if loop is not self._loop:
            # Handles of another loop (or a forked parent) cannot be used here; drop them.
            self._loop = loop
            self._redis = None
            self._reader = None
            self._slots = None
            self._pool = None

    @property
    def redis(self) -> Any:
        """The loop's redis.asyncio client.

        A plain pool without socket timeouts: redis.asyncio implements both a blocking pool
        and a socket timeout with extra tasks and conditions, which doubled the CPU of a cached
        read (measured ~590 against ~300 us). Cart reads are bounded instead by `read_slots`
        (a burst of woken waiters queues there) and by `asyncio.timeout` (queries.load_cart).
        """
        if self._injected_redis is not None:
            return self._injected_redis
        self._same_loop()
        if self._redis is None:
            pool = aioredis.ConnectionPool.from_url(
                self.config.redis_url,
                # Room beyond the read slots for re-warms, pings and tickets.
                max_connections=self.config.redis_connections + SPARE_CONNECTIONS,
                socket_connect_timeout=self.config.redis_timeout_ms / 1000,
                # A socket broken since its last use (e.g. Redis restarted): one reconnect,
                # then the failure is real (and the breaker sends reads to PostgreSQL).
                retry_on_error=[redis.ConnectionError],
            )
            self._redis = aioredis.Redis(connection_pool=pool)
            self._slots = asyncio.Semaphore(self.config.redis_connections)
        return self._redis

    @property
    def read_slots(self) -> asyncio.Semaphore:
        """At most READ_REDIS_CONNECTIONS cart reads at once per loop; the rest queue here."""
        self.redis  # noqa: B018 - makes the loop's client and its slots
        assert self._slots is not None
        return self._slots

    @property
    def injected_redis(self) -> bool:
        """Whether Redis is a test's fake (no slots or timeouts around it)."""
        return self._injected_redis is not None

    @property
    def reader(self) -> Any:
        """What reads carts (`hmget`): the loop's pipelined hiredis connection (cart_read.resp,
        about half the CPU of redis.asyncio's command path), redis.asyncio for URLs it does not
        speak (TLS, unix sockets) and a test's injected client."""
        if self._injected_redis is not None or not supports(self.config.redis_url):
            return self.redis
        self.redis  # noqa: B018 - checks the loop (drops another loop's handles)
        if self._reader is None:
            self._reader = PipelinedRedis(self.config.redis_url,
                                          self.config.redis_timeout_ms / 1000)
        return self._reader

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
            if self._reader is not None:
                await self._reader.aclose()
        self._redis = None
        self._reader = None
        self._pool = None
