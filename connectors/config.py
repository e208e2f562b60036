"""Connector settings from the environment; the defaults fit the local stack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from cart_contract.settings import (
    ROOT,
    DatabaseUrl,
    KafkaBootstrap,
    RecoveryDir,
    RedisKeyPrefix,
    RedisUrl,
    RunDir,
    Settings,
    TopicCartDetails,
    TopicDeadLetter,
    TopicProductReservations,
    TopicProducts,
    UpdatesChannel,
)

SINKS = ("redis", "postgres", "catalog", "reservations")


class Config(Settings):
    """Everything the sinks, the catalog loader, replay and migrate read from the environment.

    `key_prefix` is put in front of every Redis key (`cart:…`, `product:…`, `catalog:ready`);
    it is empty in production and lets tests share one Redis without seeing each other.
    """

    kafka_bootstrap: KafkaBootstrap
    redis_url: RedisUrl
    database_url: DatabaseUrl
    topic_cart_details: TopicCartDetails
    topic_products: TopicProducts
    topic_product_reservations: TopicProductReservations
    topic_dead_letter: TopicDeadLetter
    group_prefix: Annotated[str, Field(
        validation_alias="CONSUMER_GROUP_PREFIX",
        description="sink consumer groups are `<prefix>-redis`, `-postgres`, `-catalog`, "
                    "`-reservations`")] \
        = "cartstream"
    key_prefix: RedisKeyPrefix
    updates_channel: UpdatesChannel
    # A batch closes at batch_max records or after batch_wait_ms, whichever comes first. The
    # wait is short because it is added to the freshness of every cart at a light load; under
    # a heavy one batches still grow to batch_max, as records pile up while the previous
    # batch is being written.
    batch_max: Annotated[int, Field(ge=1, validation_alias="SINK_BATCH_MAX",
                                    description="records per sink batch")] = 5000
    batch_wait_ms: Annotated[int, Field(
        ge=1, validation_alias="SINK_BATCH_WAIT_MS",
        description="how long a sink batch waits to fill")] = 20
    retry_max_s: Annotated[float, Field(
        gt=0, validation_alias="SINK_RETRY_MAX_S",
        description="longest backoff between retries of a store or broker that is down")] = 5.0
    metrics_host: Annotated[str, Field(
        validation_alias="SINK_METRICS_HOST",
        description="address the sinks' metrics ports listen on")] = "127.0.0.1"
    # One port per sink, so all of them run on one machine; the aggregator has 9102 (+ i).
    redis_metrics_port: Annotated[int, Field(
        ge=0, le=65535, validation_alias="SINK_REDIS_METRICS_PORT",
        description="the Redis sink's `/metrics`, `/healthz`, `/readyz` (0 = off)")] = 9111
    postgres_metrics_port: Annotated[int, Field(
        ge=0, le=65535, validation_alias="SINK_POSTGRES_METRICS_PORT",
        description="the PostgreSQL sink's metrics port (0 = off)")] = 9112
    catalog_metrics_port: Annotated[int, Field(
        ge=0, le=65535, validation_alias="SINK_CATALOG_METRICS_PORT",
        description="the catalog sink's metrics port (0 = off)")] = 9113
    reservations_metrics_port: Annotated[int, Field(
        ge=0, le=65535, validation_alias="SINK_RESERVATIONS_METRICS_PORT",
        description="the reservations sink's metrics port (0 = off)")] = 9114
    lag_interval_s: Annotated[float, Field(
        gt=0, validation_alias="SINK_LAG_INTERVAL_S",
        description="how often a sink measures its consumer lag")] = 5.0
    ready_max_lag: Annotated[int, Field(
        ge=0, validation_alias="SINK_READY_MAX_LAG",
        description="a sink whose partitions lag more records than this is not ready "
                    "(`/readyz` 503)")] = 10_000
    run_dir: RunDir = ROOT / ".run"
    aggregator_recovery_dir: RecoveryDir

    @property
    def batch_wait_s(self) -> float:
        """SINK_BATCH_WAIT_MS in seconds."""
        return self.batch_wait_ms / 1000

    def group(self, sink: str) -> str:
        """The consumer group of one sink (`redis`, `postgres` or `catalog`)."""
        return f"{self.group_prefix}-{sink}"

    def metrics_port(self, sink: str) -> int:
        """The metrics port of one sink (0: none)."""
        return int(getattr(self, f"{sink}_metrics_port"))

    def topic_of(self, sink: str) -> str:
        """The topic one sink reads."""
        if sink == "reservations":
            return self.topic_product_reservations
        return self.topic_products if sink == "catalog" else self.topic_cart_details

    @property
    def recovery_dir(self) -> Path:
        """The aggregator's Bytewax recovery directory (what `replay --from-events` deletes)."""
        return self.aggregator_recovery_dir or self.run_dir / "aggregator" / "recovery"
