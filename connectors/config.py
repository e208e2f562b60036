"""Connector settings from the environment; the defaults fit the local stack."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """Everything the connectors read from their environment."""

    kafka_bootstrap: str = "localhost:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://cartstream@127.0.0.1:5432/cartstream"
    topic_cart_details: str = "cart-details-event"
    topic_products: str = "product-details-events"
    topic_dead_letter: str = "cartstream-dead-letter"
    group_prefix: str = "cartstream"
    updates_channel: str = "cartstream:cart-updated"
    batch_max: int = 5000
    batch_wait_s: float = 0.05
    retry_max_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        """Read the configuration from environment variables."""
        return cls(
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            redis_url=env.get("REDIS_URL", cls.redis_url),
            database_url=env.get("DATABASE_URL", cls.database_url),
            topic_cart_details=env.get("TOPIC_CART_DETAILS", cls.topic_cart_details),
            topic_products=env.get("TOPIC_PRODUCTS", cls.topic_products),
            topic_dead_letter=env.get("TOPIC_DEAD_LETTER", cls.topic_dead_letter),
            group_prefix=env.get("CONSUMER_GROUP_PREFIX", cls.group_prefix),
            batch_max=int(env.get("SINK_BATCH_MAX", cls.batch_max)),
        )

    def group(self, sink: str) -> str:
        """The consumer group of one sink."""
        return f"{self.group_prefix}-{sink}"
