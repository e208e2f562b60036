"""Connector settings from the environment; the defaults fit the local stack."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SINKS = ("redis", "postgres", "catalog")


@dataclass(frozen=True)
class Config:
    """Everything the connectors read from their environment.

    `key_prefix` is put in front of every Redis key (`cart:…`, `product:…`, `catalog:ready`);
    it is empty in production and lets tests share one Redis without seeing each other.
    """

    kafka_bootstrap: str = "localhost:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://cartstream@127.0.0.1:5432/cartstream"
    topic_cart_details: str = "cart-details-event"
    topic_products: str = "product-details-events"
    topic_dead_letter: str = "cartstream-dead-letter"
    group_prefix: str = "cartstream"
    key_prefix: str = ""
    updates_channel: str = "cartstream:cart-updated"
    # A batch closes at batch_max records or after batch_wait_s, whichever comes first. The
    # wait is short because it is added to the freshness of every cart at a light load; under
    # a heavy one batches still grow to batch_max, as records pile up while the previous
    # batch is being written.
    batch_max: int = 5000
    batch_wait_s: float = 0.02
    retry_max_s: float = 5.0
    run_dir: Path = ROOT / ".run"
    aggregator_recovery_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        """Read the configuration from environment variables."""
        recovery = env.get("AGG_RECOVERY_DIR")
        return cls(
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            redis_url=env.get("REDIS_URL", cls.redis_url),
            database_url=env.get("DATABASE_URL", cls.database_url),
            topic_cart_details=env.get("TOPIC_CART_DETAILS", cls.topic_cart_details),
            topic_products=env.get("TOPIC_PRODUCTS", cls.topic_products),
            topic_dead_letter=env.get("TOPIC_DEAD_LETTER", cls.topic_dead_letter),
            group_prefix=env.get("CONSUMER_GROUP_PREFIX", cls.group_prefix),
            key_prefix=env.get("REDIS_KEY_PREFIX", cls.key_prefix),
            updates_channel=env.get("CART_UPDATES_CHANNEL", cls.updates_channel),
            batch_max=_positive_int(env, "SINK_BATCH_MAX", cls.batch_max),
            batch_wait_s=_positive_int(env, "SINK_BATCH_WAIT_MS", int(cls.batch_wait_s * 1000))
            / 1000,
            retry_max_s=float(env.get("SINK_RETRY_MAX_S", cls.retry_max_s)),
            run_dir=Path(env.get("RUN_DIR") or cls.run_dir),
            aggregator_recovery_dir=Path(recovery) if recovery else None,
        )

    def group(self, sink: str) -> str:
        """The consumer group of one sink (`redis`, `postgres` or `catalog`)."""
        return f"{self.group_prefix}-{sink}"

    def topic_of(self, sink: str) -> str:
        """The topic one sink reads."""
        return self.topic_products if sink == "catalog" else self.topic_cart_details

    @property
    def recovery_dir(self) -> Path:
        """The aggregator's Bytewax recovery directory (what `replay --from-events` deletes)."""
        return self.aggregator_recovery_dir or self.run_dir / "aggregator" / "recovery"


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {raw!r}")
    return value
