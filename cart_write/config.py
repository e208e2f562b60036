"""Write API settings, read once from the environment; defaults fit the local stack."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from cart_contract.settings import (
    KafkaClientSettings,
    LogLevel,
    RedisKeyPrefix,
    RedisUrl,
    TopicCartEvents,
    WritePort,
)
from cart_web.settings import WriteSecurity


class Config(WriteSecurity, KafkaClientSettings):
    """Everything the write API needs to know about its surroundings."""

    host: Annotated[str, Field(validation_alias="WRITE_HOST",
                               description="address to listen on")] = "127.0.0.1"
    port: WritePort
    # Measured on 2 cores (bench/write_api.py): 2 granian workers x 16 blocking threads keep
    # enough requests in flight to fill the producer's batches; more threads only add GIL
    # contention (same throughput, worse p99), fewer leave the CPU waiting on acks.
    workers: Annotated[int, Field(ge=1, validation_alias="WRITE_WORKERS",
                                  description="granian worker processes")] = 2
    threads: Annotated[int, Field(ge=1, validation_alias="WRITE_THREADS",
                                  description="blocking threads per worker")] = 16
    topic_cart_events: TopicCartEvents
    redis_url: RedisUrl
    catalog_check: Annotated[bool, Field(
        validation_alias="WRITE_CATALOG_CHECK",
        description="refuse items the product catalog (in Redis) does not know")] = True
    redis_key_prefix: RedisKeyPrefix
    redis_timeout_s: Annotated[float, Field(
        ge=0.01, validation_alias="WRITE_REDIS_TIMEOUT_S",
        description="seconds a catalog lookup may take")] = 0.25
    # A short linger batches concurrent requests into one produce request (5 ms: fewer,
    # fuller requests cost the API and the broker less CPU per record).
    linger_ms: Annotated[int, Field(
        ge=0, validation_alias="WRITE_LINGER_MS",
        description="how long the producer waits to fill a batch")] = 5
    batch_size: Annotated[int, Field(
        ge=1024, validation_alias="WRITE_BATCH_SIZE",
        description="producer batch size in bytes")] = 65536
    # Bounds that turn a dead broker into a 503 within a few seconds instead of a hang.
    request_timeout_ms: Annotated[int, Field(
        ge=100, validation_alias="WRITE_KAFKA_REQUEST_TIMEOUT_MS",
        description="one produce request's timeout")] = 3000
    delivery_timeout_ms: Annotated[int, Field(
        ge=100, validation_alias="WRITE_KAFKA_DELIVERY_TIMEOUT_MS",
        description="a record not acknowledged within this answers 503 (at least "
                    "linger + request timeout)")] = 5000
    max_block_ms: Annotated[int, Field(
        ge=100, validation_alias="WRITE_KAFKA_MAX_BLOCK_MS",
        description="longest wait for broker metadata or buffer space")] = 3000
    retry_after_s: Annotated[int, Field(
        ge=1, validation_alias="WRITE_RETRY_AFTER_S",
        description="Retry-After of a 503")] = 2
    max_body_bytes: Annotated[int, Field(
        ge=1024, validation_alias="WRITE_MAX_BODY_BYTES",
        description="largest request body (bigger: 413)")] = 64 * 1024
    idempotency_ttl_s: Annotated[int, Field(
        ge=1, validation_alias="WRITE_IDEMPOTENCY_TTL_S",
        description="seconds an Idempotency-Key's record (and so its answer) is kept")] = 24 * 3600
    http_metrics: Annotated[bool, Field(
        validation_alias="WRITE_HTTP_METRICS",
        description="count requests by route and status and time them (GET /metrics)")] = True
    log_level: Annotated[LogLevel, Field(validation_alias="WRITE_LOG_LEVEL",
                                         description="log level")] = "INFO"

    @model_validator(mode="after")
    def _delivery_outlasts_a_request(self) -> Config:
        if self.delivery_timeout_ms < self.linger_ms + self.request_timeout_ms:
            raise ValueError(
                "WRITE_KAFKA_DELIVERY_TIMEOUT_MS must be >= WRITE_LINGER_MS + "
                f"WRITE_KAFKA_REQUEST_TIMEOUT_MS, got {self.delivery_timeout_ms} < "
                f"{self.linger_ms} + {self.request_timeout_ms}"
            )
        return self

    @property
    def ack_timeout_s(self) -> float:
        """How long a request waits for the broker's ack: the delivery timeout plus slack."""
        return self.delivery_timeout_ms / 1000 + 1.0

    @property
    def idempotency_pending_ttl_s(self) -> int:
        """How long a key stays reserved for a request that may still be waiting for its ack."""
        return int(self.ack_timeout_s) + 5
