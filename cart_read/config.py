"""Read API settings, from the environment; the defaults are the local stack."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, model_validator

from cart_contract.settings import (
    DatabaseUrl,
    LogLevel,
    RedisKeyPrefix,
    RedisUrl,
    UpdatesChannel,
    WritePort,
)
from cart_web.settings import ReadSecurity


class Config(ReadSecurity):
    """Everything the read API needs to know about its surroundings."""

    host: Annotated[str, Field(validation_alias="READ_HOST",
                               description="address to listen on")] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, validation_alias="READ_PORT",
                               description="HTTP port")] = 7000
    workers: Annotated[int, Field(ge=1, validation_alias="READ_WORKERS",
                                  description="granian worker processes")] = 2
    redis_url: RedisUrl
    database_url: DatabaseUrl
    # The connectors' variable, so one setting names the channel for both sides (the read
    # API's own older name still works).
    notify_channel: Annotated[UpdatesChannel, Field(
        validation_alias=AliasChoices("CART_UPDATES_CHANNEL", "READ_NOTIFY_CHANNEL"))]
    redis_key_prefix: RedisKeyPrefix
    # A waiter or stream is an asyncio task and a socket, not a thread: this cap only guards
    # the worker's memory and file descriptors (raise `ulimit -n` above it).
    max_waiters: Annotated[int, Field(
        ge=1, validation_alias="READ_MAX_WAITERS",
        description="safety cap on read-your-write waits plus event streams open per worker "
                    "(beyond: 503)")] = 20_000
    redis_connections: Annotated[int, Field(
        ge=1, validation_alias="READ_REDIS_CONNECTIONS",
        description="Redis connections per worker (requests queue for one beyond)")] = 32
    pg_connections: Annotated[int, Field(
        ge=1, validation_alias="READ_PG_CONNECTIONS",
        description="PostgreSQL connections per worker")] = 8
    stream_heartbeat_s: Annotated[float, Field(
        gt=0, validation_alias="READ_STREAM_HEARTBEAT_S",
        description="an event stream sends a comment this often when nothing changed")] = 15.0
    stream_retry_ms: Annotated[int, Field(
        ge=0, validation_alias="READ_STREAM_RETRY_MS",
        description="the `retry:` an event stream asks browsers to reconnect after")] = 3_000
    stream_ticket_ttl_s: Annotated[int, Field(
        ge=1, validation_alias="READ_STREAM_TICKET_TTL_S",
        description="secure profile: how long an event-stream ticket may open streams")] = 60
    wait_default_ms: Annotated[int, Field(
        ge=0, validation_alias="READ_WAIT_DEFAULT_MS",
        description="a wait's timeout when the request names none")] = 5_000
    wait_max_ms: Annotated[int, Field(
        ge=0, validation_alias="READ_WAIT_MAX_MS",
        description="the longest wait a request may ask for")] = 30_000
    degraded_poll_ms: Annotated[int, Field(
        ge=10, validation_alias="READ_DEGRADED_POLL_MS",
        description="while pub/sub is down, waiters re-check the store this often")] \
        = 500
    # Wall-clock time on the worker's event loop, which includes the loop's own backlog: with
    # thousands of waiters woken at once 500 ms timed out calls Redis answered at once, and the
    # breaker then sent every read to PostgreSQL.
    redis_timeout_ms: Annotated[int, Field(
        ge=1, validation_alias="READ_REDIS_TIMEOUT_MS",
        description="one Redis call's timeout")] = 2_000
    redis_retry_ms: Annotated[int, Field(
        ge=0, validation_alias="READ_REDIS_RETRY_MS",
        description="after a Redis failure, reads go to PostgreSQL for this long")] \
        = 1_000
    pg_timeout_ms: Annotated[int, Field(
        ge=1, validation_alias="READ_PG_TIMEOUT_MS",
        description="one PostgreSQL query's timeout")] = 2_000
    page_default: Annotated[int, Field(
        ge=1, validation_alias="READ_PAGE_DEFAULT",
        description="page size when the request names none (<= READ_PAGE_MAX)")] = 20
    page_max: Annotated[int, Field(ge=1, validation_alias="READ_PAGE_MAX",
                                   description="largest page size")] = 100
    log_level: Annotated[LogLevel, Field(validation_alias="READ_LOG_LEVEL",
                                         description="log level")] = "INFO"
    # Granian kills a worker that has not stopped this long after SIGTERM (one still starting
    # up when the signal came never stops by itself; open waits and streams end at shutdown).
    shutdown_timeout_s: Annotated[int, Field(
        ge=1, validation_alias="READ_SHUTDOWN_TIMEOUT_S",
        description="a worker not stopped this long after SIGTERM is killed")] = 10
    # Python's GIL switch interval in the workers (default 5000 us). Granian's I/O threads
    # need the GIL to hand requests to the event loop and take responses back.
    switch_interval_us: Annotated[int, Field(
        ge=50, validation_alias="READ_SWITCH_INTERVAL_US",
        description="the workers' GIL switch interval (Python's default: 5000)")] \
        = 500

    # The cart page (GET /, cart_read/page.py) sends its commands to the write API.
    write_port: WritePort
    page_write_url: Annotated[str, Field(
        validation_alias="PAGE_WRITE_URL", pattern=r"^(https?://[^\s/?#]+)?$",
        description="the write API's origin the cart page (`GET /`) sends commands to; empty: "
                    "`http://<the page's host>:WRITE_PORT`")] = ""

    @model_validator(mode="after")
    def _page_default_fits(self) -> Config:
        if self.page_default > self.page_max:
            raise ValueError(f"READ_PAGE_DEFAULT must not exceed READ_PAGE_MAX, got "
                             f"{self.page_default} > {self.page_max}")
        return self
