"""Write API settings, read once from the environment; defaults fit the local stack."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cart_web.env import LOG_LEVELS, env_bool, env_float, env_int

KAFKA_CLIENTS = ("confluent", "kafka-python")


@dataclass(frozen=True)
class Config:
    """Everything the write API needs to know about its surroundings."""

    host: str = "127.0.0.1"
    port: int = 8080
    # Measured on 2 cores (bench/write_api.py): 2 granian workers x 16 blocking threads keep
    # enough requests in flight to fill the producer's batches; more threads only add GIL
    # contention (same throughput, worse p99), fewer leave the CPU waiting on acks.
    workers: int = 2
    threads: int = 16
    kafka_bootstrap: str = "localhost:9092"
    topic_cart_events: str = "cart-events"
    redis_url: str = "redis://127.0.0.1:6379/0"
    catalog_check: bool = True
    # Prefix of the connectors' Redis keys (REDIS_KEY_PREFIX, shared with them and the read API).
    redis_key_prefix: str = ""
    redis_timeout_s: float = 0.25
    # Kafka client: "confluent" (librdkafka: ~40% less CPU per request, measured) or
    # "kafka-python".
    kafka_client: str = "confluent"
    # Producer tuning: a short linger batches concurrent requests into one produce request
    # (5 ms: fewer, fuller requests cost the API and the broker less CPU per record).
    linger_ms: int = 5
    batch_size: int = 65536
    # Bounds that turn a dead broker into a 503 within a few seconds instead of a hang.
    request_timeout_ms: int = 3000
    delivery_timeout_ms: int = 5000
    max_block_ms: int = 3000
    retry_after_s: int = 2
    max_body_bytes: int = 64 * 1024
    # How long an Idempotency-Key's record (and so its answer) is kept.
    idempotency_ttl_s: int = 24 * 3600
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"WRITE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if self.kafka_client not in KAFKA_CLIENTS:
            raise ValueError(f"WRITE_KAFKA_CLIENT must be one of {', '.join(KAFKA_CLIENTS)}")
        if self.delivery_timeout_ms < self.linger_ms + self.request_timeout_ms:
            raise ValueError(
                "WRITE_KAFKA_DELIVERY_TIMEOUT_MS must be >= WRITE_LINGER_MS + "
                "WRITE_KAFKA_REQUEST_TIMEOUT_MS"
            )

    @property
    def ack_timeout_s(self) -> float:
        """How long a request waits for the broker's ack: the delivery timeout plus slack."""
        return self.delivery_timeout_ms / 1000 + 1.0

    @property
    def idempotency_pending_ttl_s(self) -> int:
        """How long a key stays reserved for a request that may still be waiting for its ack."""
        return int(self.ack_timeout_s) + 5

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        """Build the config from environment variables (unset or empty means default)."""
        d = cls()
        return cls(
            host=env.get("WRITE_HOST") or d.host,
            port=env_int(env, "WRITE_PORT", d.port, 0),
            workers=env_int(env, "WRITE_WORKERS", d.workers, 1),
            threads=env_int(env, "WRITE_THREADS", d.threads, 1),
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP") or d.kafka_bootstrap,
            topic_cart_events=env.get("TOPIC_CART_EVENTS") or d.topic_cart_events,
            redis_url=env.get("REDIS_URL") or d.redis_url,
            catalog_check=env_bool(env, "WRITE_CATALOG_CHECK", d.catalog_check),
            redis_key_prefix=env.get("REDIS_KEY_PREFIX", d.redis_key_prefix),
            redis_timeout_s=env_float(env, "WRITE_REDIS_TIMEOUT_S", d.redis_timeout_s, 0.01),
            kafka_client=(env.get("WRITE_KAFKA_CLIENT") or d.kafka_client).lower(),
            linger_ms=env_int(env, "WRITE_LINGER_MS", d.linger_ms, 0),
            batch_size=env_int(env, "WRITE_BATCH_SIZE", d.batch_size, 1024),
            request_timeout_ms=env_int(
                env, "WRITE_KAFKA_REQUEST_TIMEOUT_MS", d.request_timeout_ms, 100
            ),
            delivery_timeout_ms=env_int(
                env, "WRITE_KAFKA_DELIVERY_TIMEOUT_MS", d.delivery_timeout_ms, 100
            ),
            max_block_ms=env_int(env, "WRITE_KAFKA_MAX_BLOCK_MS", d.max_block_ms, 100),
            retry_after_s=env_int(env, "WRITE_RETRY_AFTER_S", d.retry_after_s, 1),
            max_body_bytes=env_int(env, "WRITE_MAX_BODY_BYTES", d.max_body_bytes, 1024),
            idempotency_ttl_s=env_int(env, "WRITE_IDEMPOTENCY_TTL_S", d.idempotency_ttl_s, 1),
            log_level=(env.get("WRITE_LOG_LEVEL") or d.log_level).upper(),
        )
