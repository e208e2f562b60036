"""Per-principal limits kept in Redis, so every API instance shares them.

A fixed window per principal and kind (one INCR + EXPIRE round trip), and a counter of open
long-poll waits. When Redis cannot answer the request goes through (logged): the limits guard
against abuse, they must not turn a Redis hiccup into an outage of the APIs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis as redis_lib

from cart_contract.layout import rate_limit_key, waiting_key

log = logging.getLogger("cart_web.ratelimit")


def redis_factory(url: str, timeout_s: float = 0.25) -> Callable[[], Any]:
    """A lazily made Redis client (made in each worker process, after granian forks)."""
    client: list[Any] = []

    def get() -> Any:
        if not client:
            client.append(redis_lib.Redis.from_url(url, socket_timeout=timeout_s,
                                                   socket_connect_timeout=timeout_s))
        return client[0]

    return get


class FixedWindow:
    """At most `limit` requests of one kind per principal per `window_s` seconds."""

    def __init__(self, client: Callable[[], Any], kind: str, limit: int, window_s: int, *,
                 key_prefix: str = "", clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._kind = kind
        self._limit = limit
        self._window_s = window_s
        self._prefix = key_prefix
        self._clock = clock

    def _key(self, principal: str) -> tuple[str, float, int]:
        now = self._clock()
        window = int(now // self._window_s)
        return rate_limit_key(self._kind, principal, window, self._prefix), now, window

    def _verdict(self, count: int, now: float, window: int) -> int | None:
        if count <= self._limit:
            return None
        return max(1, math.ceil((window + 1) * self._window_s - now))

    def hit(self, principal: str) -> int | None:
        """Count one request; None if allowed, else the seconds until the window ends."""
        key, now, window = self._key(principal)
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self._window_s + 1)
            count = pipe.execute()[0]
        except redis_lib.RedisError as exc:
            log.warning("rate limit not checked (Redis: %s)", exc)
            return None
        return self._verdict(count, now, window)


class AsyncFixedWindow(FixedWindow):
    """The same window over a redis.asyncio client (the read API's event loop)."""

    async def hit(self, principal: str) -> int | None:  # type: ignore[override]
        """Count one request; None if allowed, else the seconds until the window ends."""
        key, now, window = self._key(principal)
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self._window_s + 1)
            count = (await pipe.execute())[0]
        except redis_lib.RedisError as exc:
            log.warning("rate limit not checked (Redis: %s)", exc)
            return None
        return self._verdict(count, now, window)


class ConcurrencyCap:
    """At most `cap` open waits per principal, over all instances.

    The counter expires `ttl_s` after its last change, so a crashed instance's waits do not
    count forever.
    """

    def __init__(self, client: Callable[[], Any], cap: int, ttl_s: int, *,
                 key_prefix: str = "") -> None:
        self._client = client
        self._cap = cap
        self._ttl_s = ttl_s
        self._prefix = key_prefix

    def acquire(self, principal: str) -> bool | None:
        """True: counted, call release; False: over the cap; None: Redis down, not counted."""
        key = waiting_key(principal, self._prefix)
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self._ttl_s)
            count = pipe.execute()[0]
            if count <= self._cap:
                return True
            self._client().decr(key)
        except redis_lib.RedisError as exc:
            log.warning("wait cap not checked (Redis: %s)", exc)
            return None
        return False

    def release(self, principal: str) -> None:
        """One wait of `principal` has ended."""
        try:
            self._client().decr(waiting_key(principal, self._prefix))
        except redis_lib.RedisError as exc:
            log.warning("wait cap not released (Redis: %s; the counter expires)", exc)


class AsyncConcurrencyCap(ConcurrencyCap):
    """The same cap over a redis.asyncio client (the read API's event loop)."""

    async def acquire(self, principal: str) -> bool | None:  # type: ignore[override]
        """True: counted, call release; False: over the cap; None: Redis down, not counted."""
        key = waiting_key(principal, self._prefix)
        try:
            pipe = self._client().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self._ttl_s)
            count = (await pipe.execute())[0]
            if count <= self._cap:
                return True
            await self._client().decr(key)
        except redis_lib.RedisError as exc:
            log.warning("wait cap not checked (Redis: %s)", exc)
            return None
        return False

    async def release(self, principal: str) -> None:  # type: ignore[override]
        """One wait of `principal` has ended."""
        try:
            await self._client().decr(waiting_key(principal, self._prefix))
        except redis_lib.RedisError as exc:
            log.warning("wait cap not released (Redis: %s; the counter expires)", exc)


def async_redis_factory(url: str, timeout_s: float = 0.25) -> Callable[[], Any]:
    """A lazily made redis.asyncio client, made again when the event loop changes."""
    import asyncio

    import redis.asyncio as aioredis

    made: dict[str, Any] = {}

    def get() -> Any:
        loop = asyncio.get_running_loop()
        if made.get("loop") is not loop:
            made["loop"] = loop
            made["client"] = aioredis.Redis.from_url(url, socket_timeout=timeout_s,
                                                     socket_connect_timeout=timeout_s)
        return made["client"]

    return get
