"""Aggregator settings from the environment; the defaults fit the local stack."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    """Everything the aggregator reads from its environment."""

    kafka_bootstrap: str = "localhost:9092"
    topic_cart_events: str = "cart-events"
    topic_products: str = "product-details-events"
    topic_cart_details: str = "cart-details-event"
    topic_dead_letter: str = "cartstream-dead-letter"
    # How long an add waits for its product to appear in the catalog before UNKNOWN_PRODUCT.
    product_wait_s: float = 30.0
    run_dir: Path = Path(".run")
    workers: int = 1
    # Whole seconds: bytewax.run takes integers.
    snapshot_interval_s: int = 5
    backup_interval_s: int = 30
    metrics_port: int = 3030
    source_batch_size: int = 1000

    @property
    def recovery_dir(self) -> Path:
        """Where bytewax keeps its recovery partitions."""
        return self.run_dir / "aggregator" / "recovery"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        """Read the configuration from environment variables."""
        return cls(
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            topic_cart_events=env.get("TOPIC_CART_EVENTS", cls.topic_cart_events),
            topic_products=env.get("TOPIC_PRODUCTS", cls.topic_products),
            topic_cart_details=env.get("TOPIC_CART_DETAILS", cls.topic_cart_details),
            topic_dead_letter=env.get("TOPIC_DEAD_LETTER", cls.topic_dead_letter),
            product_wait_s=float(env.get("AGG_PRODUCT_WAIT_S", cls.product_wait_s)),
            run_dir=Path(env.get("RUN_DIR", str(cls.run_dir))),
            workers=int(env.get("AGG_WORKERS", cls.workers)),
            snapshot_interval_s=int(env.get("AGG_SNAPSHOT_INTERVAL_S", cls.snapshot_interval_s)),
            backup_interval_s=int(env.get("AGG_BACKUP_INTERVAL_S", cls.backup_interval_s)),
            metrics_port=int(env.get("AGG_METRICS_PORT", cls.metrics_port)),
        )
