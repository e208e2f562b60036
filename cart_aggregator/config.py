"""Aggregator settings from the environment; the defaults fit the local stack."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from cart_contract.settings import (
    KafkaClientSettings,
    LogLevel,
    RecoveryDir,
    RunDir,
    TopicCartDetails,
    TopicCartEvents,
    TopicCartReservations,
    TopicDeadLetter,
    TopicProductReservations,
    TopicProducts,
)


def parse_addresses(value: str) -> tuple[str, ...]:
    """`host:port` entries separated by ';', ',' or spaces (bytewax.run uses ';')."""
    return tuple(a for a in re.split(r"[;,\s]+", value.strip()) if a)


class Config(KafkaClientSettings):
    """Everything the aggregator reads from its environment."""

    topic_cart_events: TopicCartEvents
    topic_products: TopicProducts
    topic_cart_details: TopicCartDetails
    topic_dead_letter: TopicDeadLetter
    topic_cart_reservations: TopicCartReservations
    topic_product_reservations: TopicProductReservations
    product_wait_s: Annotated[float, Field(
        ge=0, validation_alias="AGG_PRODUCT_WAIT_S",
        description="how long an add waits (processing time) for its product before "
                    "`UNKNOWN_PRODUCT`")] = 30.0
    run_dir: RunDir = Path(".run")
    workers: Annotated[int, Field(
        ge=1, validation_alias="AGG_WORKERS",
        description="aggregator worker threads per process (they share the GIL: prefer "
                    "processes)")] = 1
    processes: Annotated[int, Field(
        ge=1, validation_alias="AGG_PROCESSES",
        description="aggregator processes `cartstream aggregate` starts on this machine "
                    "(a local cluster)")] = 1
    addresses: Annotated[tuple[str, ...], NoDecode, Field(
        validation_alias="AGG_ADDRESSES",
        description="a cluster over machines: every process's address, in order (`-a`; needs "
                    "`AGG_PROCESS_ID`)",
        json_schema_extra={"allowed": "host:port entries separated by `;`, `,` or spaces"})] \
        = ()
    process_id: Annotated[int | None, Field(
        ge=0, validation_alias="AGG_PROCESS_ID",
        description="this process's index in `AGG_ADDRESSES` (`-i`)")] = None
    cluster_port: Annotated[int, Field(
        ge=1, le=65535, validation_alias="AGG_CLUSTER_PORT",
        description="first port of the local cluster of `AGG_PROCESSES` > 1")] = 2101
    recovery: Annotated[bool, Field(
        validation_alias="AGG_RECOVERY",
        description="Bytewax recovery on (a restart resumes) or off (`--no-recovery`)")] = True
    recovery_directory: RecoveryDir
    recovery_partitions: Annotated[int, Field(
        ge=1, validation_alias="AGG_RECOVERY_PARTITIONS",
        description="recovery partitions to create when there are none (>= the most workers "
                    "ever run)")] = 8
    # Every epoch writes one snapshot row per key it touched (docs/operations.md): bytewax's own
    # default epoch, 10 s, halves that cost against 5 s, for twice the input to re-read after
    # a crash.
    snapshot_interval_s: Annotated[float, Field(
        gt=0, validation_alias="AGG_SNAPSHOT_INTERVAL_S",
        description="seconds between Bytewax snapshots, the epoch (`-s`)")] = 10.0
    backup_interval_s: Annotated[float, Field(
        ge=0, validation_alias="AGG_BACKUP_INTERVAL_S",
        description="seconds of older snapshots kept (`-b`)")] = 30.0
    metrics_host: Annotated[str, Field(
        validation_alias="AGG_METRICS_HOST",
        description="address the Prometheus metrics listen on")] = "127.0.0.1"
    # Process i of a cluster serves on metrics_port + i.
    metrics_port: Annotated[int, Field(
        ge=0, le=65535, validation_alias="AGG_METRICS_PORT",
        description="Prometheus metrics port (process *i* of a cluster: port + *i*; 0 = off)")] \
        = 9102
    lag_interval_s: Annotated[float, Field(
        gt=0, validation_alias="AGG_LAG_INTERVAL_S",
        description="how often consumer lag is refreshed from the brokers' high watermarks")] \
        = 5.0
    ready_max_lag: Annotated[int, Field(
        ge=0, validation_alias="AGG_READY_MAX_LAG",
        description="a process whose partitions lag more records than this is not ready "
                    "(`/readyz` 503 on its metrics port)")] = 10_000
    # Only a backlog fills a batch; the bigger it is, the more often one customer has several
    # events in it (one keyed call for all of them).
    source_batch_size: Annotated[int, Field(
        ge=1, validation_alias="AGG_SOURCE_BATCH_SIZE",
        description="Kafka messages per poll and partition")] = 10_000
    source_idle_ms: Annotated[float, Field(
        ge=0, validation_alias="AGG_SOURCE_IDLE_MS",
        description="after a poll that found nothing, a partition is polled again this much "
                    "later (0 = at once); see \"Idle aggregator\"")] = 10.0
    # Collections walk the batches in flight and every customer's stage object; see
    # service.py. A replay (`cartstream replay --from events`) runs its aggregator with 0.
    gc_threshold: Annotated[int, Field(
        ge=0, validation_alias="AGG_GC_THRESHOLD",
        description="allocations between Python's youngest garbage collections (0 = no "
                    "collection)")] = 100_000
    delivery_timeout_s: Annotated[float, Field(
        gt=0, validation_alias="AGG_DELIVERY_TIMEOUT_S",
        description="a batch the broker has not acknowledged within this stops the flow")] \
        = 60.0
    log_level: Annotated[LogLevel, Field(validation_alias="LOG_LEVEL",
                                         description="log level")] = "INFO"

    @field_validator("addresses", mode="before")
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        return parse_addresses(value) if isinstance(value, str) else value

    @property
    def recovery_dir(self) -> Path:
        """Where bytewax keeps its recovery partitions."""
        return self.recovery_directory or self.run_dir / "aggregator" / "recovery"
