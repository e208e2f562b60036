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
    TopicCartEvents,
    TopicCartReservations,
    TopicDeadLetter,
    TopicProductReservations,
    TopicProducts,
    UpdatesChannel,
)

SINKS = ("redis", "postgres", "catalog", "reservations")
# The sinks of the aggregator's output (`cart-details-event`): what a replay from events rebuilds.
CART_SINKS = ("redis", "postgres")


class Config(Settings):
    """Everything the sinks, the catalog loader, replay and migrate read from the environment.

    `key_prefix` is put in front of every Redis key (`cart:…`, `product:…`, `catalog:ready`);
    it is empty in production and lets tests share one Redis without seeing each other.
    """

    kafka_bootstrap: KafkaBootstrap
    redis_url: RedisUrl
    database_url: DatabaseUrl
    topic_cart_details: TopicCartDetails
    # Replay from events runs the aggregator on the same topics.
    topic_cart_events: TopicCartEvents
    topic_cart_reservations: TopicCartReservations
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
    # A replay reads a backlog, so its batches are always full. Bigger ones coalesce a few more
    # versions of a cart, but 50,000 cost more CPU per record than 5,000 and took longer
    # (bench/replay.py --replay-batch-max 5000,50000, 200k events: 194 s vs 234 s).
    replay_batch_max: Annotated[int, Field(ge=1, validation_alias="REPLAY_BATCH_MAX",
                                           description="records per batch of `cartstream "
                                                       "replay`")] = 5000
    retry_max_s: Annotated[float, Field(
        gt=0, validation_alias="SINK_RETRY_MAX_S",
        description="longest backoff between retries of a store or broker that is down")] = 5.0
    run_dir: RunDir = ROOT / ".run"
    aggregator_recovery_dir: RecoveryDir

    @property
    def batch_wait_s(self) -> float:
        """SINK_BATCH_WAIT_MS in seconds."""
        return self.batch_wait_ms / 1000

    def group(self, sink: str) -> str:
        """The consumer group of one sink (`redis`, `postgres` or `catalog`)."""
        return f"{self.group_prefix}-{sink}"

    def topic_of(self, sink: str) -> str:
        """The topic one sink reads."""
        if sink == "reservations":
            return self.topic_product_reservations
        return self.topic_products if sink == "catalog" else self.topic_cart_details

    @property
    def recovery_dir(self) -> Path:
        """The aggregator's Bytewax recovery directory (what `replay --from-events` deletes)."""
        return self.aggregator_recovery_dir or self.run_dir / "aggregator" / "recovery"
