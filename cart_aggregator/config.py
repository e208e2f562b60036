"""Aggregator settings from the environment; the defaults fit the local stack."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def parse_addresses(value: str) -> tuple[str, ...]:
    """`host:port` entries separated by ';', ',' or spaces (bytewax.run uses ';')."""
    return tuple(a for a in re.split(r"[;,\s]+", value.strip()) if a)


@dataclass(frozen=True)
class Config:
    """Everything the aggregator reads from its environment."""

    kafka_bootstrap: str = "localhost:9092"
    topic_cart_events: str = "cart-events"
    topic_products: str = "product-details-events"
    topic_cart_details: str = "cart-details-event"
    topic_dead_letter: str = "cartstream-dead-letter"
    # How long an add waits (processing time) for its product before UNKNOWN_PRODUCT.
    product_wait_s: float = 30.0
    run_dir: Path = Path(".run")
    # Worker threads per process; they share the GIL, so prefer processes for speed.
    workers: int = 1
    # Local processes `python -m cart_aggregator` starts (a one-machine cluster).
    processes: int = 1
    # A cluster spread over machines: every process's `host:port`, and this one's index.
    addresses: tuple[str, ...] = ()
    process_id: int | None = None
    # First port of the local cluster started for `processes` > 1.
    cluster_port: int = 2101
    recovery: bool = True
    # Default: $RUN_DIR/aggregator/recovery.
    recovery_directory: Path | None = None
    recovery_partitions: int = 8
    # Every epoch writes one snapshot row per key it touched (docs/operations.md): bytewax's own
    # default epoch, 10 s, halves that cost against 5 s, for twice the input to re-read after
    # a crash.
    snapshot_interval_s: float = 10.0
    backup_interval_s: float = 30.0
    metrics_host: str = "127.0.0.1"
    # Prometheus metrics; process i of a cluster serves on metrics_port + i (0 = off).
    metrics_port: int = 9102
    # How often consumer lag is refreshed from the brokers' high watermarks.
    lag_interval_s: float = 5.0
    # Kafka messages per poll and partition. Only a backlog fills a batch; the bigger it is,
    # the more often one customer has several events in it (one keyed call for all of them).
    source_batch_size: int = 10_000
    # After a poll that found nothing, a partition is polled again this much later (0 = at once).
    source_idle_ms: float = 10.0
    # A batch not acknowledged by the broker within this time stops the flow.
    delivery_timeout_s: float = 60.0

    @property
    def recovery_dir(self) -> Path:
        """Where bytewax keeps its recovery partitions."""
        return self.recovery_directory or self.run_dir / "aggregator" / "recovery"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        """Read the configuration from environment variables."""
        pid = env.get("AGG_PROCESS_ID", "").strip()
        return cls(
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            topic_cart_events=env.get("TOPIC_CART_EVENTS", cls.topic_cart_events),
            topic_products=env.get("TOPIC_PRODUCTS", cls.topic_products),
            topic_cart_details=env.get("TOPIC_CART_DETAILS", cls.topic_cart_details),
            topic_dead_letter=env.get("TOPIC_DEAD_LETTER", cls.topic_dead_letter),
            product_wait_s=float(env.get("AGG_PRODUCT_WAIT_S", cls.product_wait_s)),
            run_dir=Path(env.get("RUN_DIR", str(cls.run_dir))),
            workers=int(env.get("AGG_WORKERS", cls.workers)),
            processes=int(env.get("AGG_PROCESSES", cls.processes)),
            addresses=parse_addresses(env.get("AGG_ADDRESSES", "")),
            process_id=int(pid) if pid else None,
            cluster_port=int(env.get("AGG_CLUSTER_PORT", cls.cluster_port)),
            recovery=_flag(env.get("AGG_RECOVERY", "true"), "AGG_RECOVERY"),
            recovery_directory=Path(env["AGG_RECOVERY_DIR"]) if env.get("AGG_RECOVERY_DIR")
            else None,
            recovery_partitions=int(
                env.get("AGG_RECOVERY_PARTITIONS", cls.recovery_partitions)
            ),
            snapshot_interval_s=float(
                env.get("AGG_SNAPSHOT_INTERVAL_S", cls.snapshot_interval_s)
            ),
            backup_interval_s=float(env.get("AGG_BACKUP_INTERVAL_S", cls.backup_interval_s)),
            metrics_host=env.get("AGG_METRICS_HOST", cls.metrics_host),
            metrics_port=int(env.get("AGG_METRICS_PORT", cls.metrics_port)),
            lag_interval_s=float(env.get("AGG_LAG_INTERVAL_S", cls.lag_interval_s)),
            source_batch_size=int(env.get("AGG_SOURCE_BATCH_SIZE", cls.source_batch_size)),
            source_idle_ms=float(env.get("AGG_SOURCE_IDLE_MS", cls.source_idle_ms)),
            delivery_timeout_s=float(
                env.get("AGG_DELIVERY_TIMEOUT_S", cls.delivery_timeout_s)
            ),
        )
