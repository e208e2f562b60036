"""Per-process Redis client and PostgreSQL pool, created lazily (after granian forks)."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any

import orjson
import psycopg
import redis
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from cart_contract.retry import retrying
from cart_read.config import Config

log = logging.getLogger(__name__)


def _configure(conn: psycopg.Connection[Any]) -> None:
    set_json_loads(orjson.loads, conn)


class _Pinned:
    """One pool connection owned by one thread; back to the pool when the thread ends."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, pool: Any) -> None:
        self.conn = pool.get_connection()
        # The thread-local dict holding us is cleared when the thread exits.
        weakref.finalize(self, pool.release, self.conn)


class PinnedReader:
    """HMGET over a connection of the process's redis pool pinned to the calling thread.

    redis.Redis takes the pool's lock twice per command; with 8 granian threads that
    contention cost more CPU than the command itself (measured ~3x per read). A pinned
    connection needs no lock. Everything else (EVAL, PING, pub/sub) uses redis.Redis.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()
        # A socket broken since this thread's last read (e.g. Redis restarted): one reconnect,
        # then the failure is real.
        self._read = retrying("Redis read", on=redis.ConnectionError, attempts=2, first_s=0,
                              logger=log)

    def hmget(self, key: str, fields: tuple[str, ...]) -> list[bytes | None]:
        """HMGET key *fields; raises redis.RedisError like redis.Redis.hmget."""
        return self._read.call(self._hmget, key, fields)

    def _hmget(self, key: str, fields: tuple[str, ...]) -> list[bytes | None]:
        pinned = getattr(self._local, "pinned", None)
        if pinned is None:
            pinned = self._local.pinned = _Pinned(self._pool)
        conn = pinned.conn
        try:
            conn.send_command("HMGET", key, *fields)
            return conn.read_response()
        except redis.ResponseError:
            raise
        except redis.RedisError:
            conn.disconnect()  # the next command on this thread connects afresh
            raise


class Stores:
    """Redis and PostgreSQL handles for one process, plus a short Redis circuit breaker.

    Injected handles (tests) are used as they are; otherwise each is built on first use in the
    process that uses it, so no socket crosses a fork.
    """

    def __init__(self, config: Config, *, redis_client: Any = None, db_pool: Any = None) -> None:
        self.config = config
        self._injected_redis = redis_client
        self._injected_pool = db_pool
        self._lock = threading.Lock()
        self._pid = 0
        self._redis: Any = None
        self._reader: Any = None
        self._pool: Any = None
        self._redis_down_until = 0.0

    def _reset_if_forked(self) -> None:
        if self._pid != os.getpid():
            # Handles inherited through a fork are the parent's; drop them without closing.
            self._pid = os.getpid()
            self._redis = None
            self._reader = None
            self._pool = None

    @property
    def redis(self) -> Any:
        """The process's redis.Redis (one connection pool per process)."""
        if self._injected_redis is not None:
            return self._injected_redis
        client = self._redis
        if client is not None and self._pid == os.getpid():
            return client
        with self._lock:
            self._reset_if_forked()
            if self._redis is None:
                timeout = self.config.redis_timeout_ms / 1000
                self._redis = redis.Redis.from_url(
                    self.config.redis_url,
                    socket_timeout=timeout,
                    socket_connect_timeout=timeout,
                    max_connections=self.config.threads + 4,
                )
            return self._redis

    @property
    def reader(self) -> Any:
        """What reads carts (`hmget`): the injected client, else a PinnedReader per process."""
        if self._injected_redis is not None:
            return self._injected_redis
        reader = self._reader
        if reader is not None and self._pid == os.getpid():
            return reader
        client = self.redis
        with self._lock:
            if self._reader is None:
                self._reader = PinnedReader(client)
            return self._reader

    @property
    def pool(self) -> Any:
        """The process's psycopg ConnectionPool, sized to the request threads."""
        if self._injected_pool is not None:
            return self._injected_pool
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            self._reset_if_forked()
            if self._pool is None:
                timeout = self.config.pg_timeout_ms / 1000
                self._pool = ConnectionPool(
                    self.config.database_url,
                    min_size=1,
                    max_size=self.config.threads,
                    timeout=timeout,
                    kwargs={"autocommit": True, "connect_timeout": max(1, round(timeout))},
                    configure=_configure,
                    open=False,
                    name="cart_read",
                )
                # wait=False: a down database must not stop the process from serving Redis reads.
                self._pool.open(wait=False)
            return self._pool

    def redis_usable(self) -> bool:
        """False for a short while after a Redis failure, so reads skip straight to PostgreSQL."""
        return time.monotonic() >= self._redis_down_until

    def redis_failed(self, exc: Exception) -> None:
        """Note a Redis failure: skip Redis for redis_retry_ms."""
        if self.redis_usable():
            log.warning("redis unavailable, reading from PostgreSQL: %s", exc)
        self._redis_down_until = time.monotonic() + self.config.redis_retry_ms / 1000

    def close(self) -> None:
        """Close what this process opened."""
        with self._lock:
            if self._pid == os.getpid():
                if self._pool is not None:
                    self._pool.close()
                if self._redis is not None:
                    self._redis.close()
            self._redis = None
            self._reader = None
            self._pool = None
