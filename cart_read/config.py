"""Read API settings, from the environment; the defaults are the local stack."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cart_web.env import LOG_LEVELS, env_int

NOTIFY_CHANNEL = "cartstream:cart-updated"




@dataclass(frozen=True)
class Config:
    """Everything the read API needs to know about its surroundings."""

    host: str = "127.0.0.1"
    port: int = 7000
    workers: int = 2
    threads: int = 8
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://cartstream@127.0.0.1:5432/cartstream"
    notify_channel: str = NOTIFY_CHANNEL
    # Prefix of every Redis key the connectors write (one Redis shared by several systems).
    redis_key_prefix: str = ""
    # Waiters hold a granian blocking thread each; keep some threads free for plain reads.
    max_waiters: int = 6
    wait_default_ms: int = 5_000
    wait_max_ms: int = 30_000
    # While the pub/sub subscriber is disconnected, waiters re-check the store this often.
    degraded_poll_ms: int = 500
    redis_timeout_ms: int = 500
    # After a Redis failure, reads go straight to PostgreSQL for this long.
    redis_retry_ms: int = 1_000
    pg_timeout_ms: int = 2_000
    page_default: int = 20
    page_max: int = 100
    log_level: str = "INFO"
    # Granian kills a worker that has not stopped this long after SIGTERM (one still starting
    # up when the signal came never stops by itself; waiters hold their thread until timeout).
    shutdown_timeout_s: int = 10
    # Python's GIL switch interval in the workers (default 5000 us). Granian's I/O thread
    # needs the GIL to hand over requests and responses; with 8 request threads it waited up
    # to 5 ms behind one of them. 500 us measured ~40% more reads/s here; 200 us was worse.
    switch_interval_us: int = 500

    def __post_init__(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"READ_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if self.page_default > self.page_max:
            raise ValueError("READ_PAGE_DEFAULT must not exceed READ_PAGE_MAX")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        """Build a Config from environment variables (READ_*, REDIS_URL, DATABASE_URL)."""
        d = cls()
        threads = env_int(env, "READ_THREADS", d.threads, 1)
        return cls(
            host=env.get("READ_HOST") or d.host,
            port=env_int(env, "READ_PORT", d.port, 0),
            workers=env_int(env, "READ_WORKERS", d.workers, 1),
            threads=threads,
            redis_url=env.get("REDIS_URL") or d.redis_url,
            database_url=env.get("DATABASE_URL") or d.database_url,
            # The connectors' variable, so one setting names the channel for both sides.
            notify_channel=env.get("CART_UPDATES_CHANNEL") or env.get("READ_NOTIFY_CHANNEL")
            or d.notify_channel,
            redis_key_prefix=env.get("REDIS_KEY_PREFIX", d.redis_key_prefix),
            max_waiters=env_int(env, "READ_MAX_WAITERS", max(1, threads - 2), 1),
            wait_default_ms=env_int(env, "READ_WAIT_DEFAULT_MS", d.wait_default_ms, 0),
            wait_max_ms=env_int(env, "READ_WAIT_MAX_MS", d.wait_max_ms, 0),
            degraded_poll_ms=env_int(env, "READ_DEGRADED_POLL_MS", d.degraded_poll_ms, 10),
            redis_timeout_ms=env_int(env, "READ_REDIS_TIMEOUT_MS", d.redis_timeout_ms, 1),
            redis_retry_ms=env_int(env, "READ_REDIS_RETRY_MS", d.redis_retry_ms, 0),
            pg_timeout_ms=env_int(env, "READ_PG_TIMEOUT_MS", d.pg_timeout_ms, 1),
            page_default=env_int(env, "READ_PAGE_DEFAULT", d.page_default, 1),
            page_max=env_int(env, "READ_PAGE_MAX", d.page_max, 1),
            log_level=(env.get("READ_LOG_LEVEL") or d.log_level).upper(),
            shutdown_timeout_s=env_int(env, "READ_SHUTDOWN_TIMEOUT_S", d.shutdown_timeout_s, 1),
            switch_interval_us=env_int(env, "READ_SWITCH_INTERVAL_US", d.switch_interval_us, 50),
        )
