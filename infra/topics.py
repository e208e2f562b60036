"""Create Cartstream's Kafka topics idempotently, with explicit configs (`cartstream topics`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)
from pydantic import Field

from cart_contract.retry import retrying
from cart_contract.settings import (
    KafkaClientSettings,
    TopicCartDetails,
    TopicCartEvents,
    TopicCartReservations,
    TopicDeadLetter,
    TopicProductReservations,
    TopicProducts,
    client_config,
)


class TopicSettings(KafkaClientSettings):
    """What `cartstream topics` reads from the environment: the topics and their sizes."""

    topic_cart_events: TopicCartEvents
    topic_products: TopicProducts
    topic_cart_details: TopicCartDetails
    topic_dead_letter: TopicDeadLetter
    topic_cart_reservations: TopicCartReservations
    topic_product_reservations: TopicProductReservations
    cart_events_partitions: Annotated[int, Field(
        ge=1, validation_alias="CART_EVENTS_PARTITIONS",
        description="partitions of the event store topic (growing it: see \"Adding "
                    "partitions\")")] = 6
    products_partitions: Annotated[int, Field(
        ge=1, validation_alias="PRODUCTS_PARTITIONS",
        description="partitions of the product catalog topic")] = 3
    cart_details_partitions: Annotated[int, Field(
        ge=1, validation_alias="CART_DETAILS_PARTITIONS",
        description="partitions of the carts topic")] = 6


@dataclass(frozen=True)
class TopicSpec:
    """A topic's name, partition count and the configs we insist on."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_specs(env: Mapping[str, str] | None = None) -> list[TopicSpec]:
    """The topics the system needs, named and sized from the environment (or `env`)."""
    s = TopicSettings.from_env(env)
    forever = {"retention.ms": "-1", "retention.bytes": "-1"}
    return [
        # The event store: never expires, one node so one in-sync replica is the most we can ask.
        TopicSpec(
            s.topic_cart_events,
            s.cart_events_partitions,
            {"cleanup.policy": "delete", "min.insync.replicas": "1", **forever},
        ),
        TopicSpec(
            s.topic_products,
            s.products_partitions,
            {"cleanup.policy": "compact", "min.insync.replicas": "1"},
        ),
        TopicSpec(
            s.topic_cart_details,
            s.cart_details_partitions,
            {"cleanup.policy": "compact", "min.insync.replicas": "1"},
        ),
        # The stock decisions' request log: one partition, so the reservation stage decides in
        # one order that a resume re-reads (docs/architecture.md, "Stock at checkout"). Kept
        # forever like the event store: the ledger's history is in it.
        TopicSpec(
            s.topic_cart_reservations,
            1,
            {"cleanup.policy": "delete", "min.insync.replicas": "1", **forever},
        ),
        TopicSpec(
            s.topic_product_reservations,
            s.products_partitions,
            {"cleanup.policy": "compact", "min.insync.replicas": "1"},
        ),
        TopicSpec(
            s.topic_dead_letter,
            1,
            {"cleanup.policy": "delete", "min.insync.replicas": "1", **forever},
        ),
    ]


def wait_for_broker(kafka: str | Mapping[str, Any], timeout_s: float) -> AdminClient:
    """Return an admin client once the broker answers a metadata request, else raise.

    `kafka`: bootstrap servers, or a client config (`KafkaClientSettings.kafka_client`).
    """
    conf = client_config(kafka)
    bootstrap = conf["bootstrap.servers"]
    admin = AdminClient({**conf, "log_level": 0})
    # A broker that is still starting is expected here: its failures are logged at INFO only.
    answer = retrying(f"Kafka at {bootstrap}: metadata", on=KafkaException, deadline_s=timeout_s,
                      first_s=0.5, max_s=0.5, level=logging.INFO)
    try:
        answer.call(admin.list_topics, timeout=2)
    except KafkaException as exc:
        raise TimeoutError(
            f"Kafka at {bootstrap} did not answer within {timeout_s:.0f}s: {exc}") from exc
    return admin


def ensure_topics(admin: AdminClient, specs: list[TopicSpec]) -> list[str]:
    """Create missing topics and converge configs of existing ones; return what was done."""
    done: list[str] = []
    existing = admin.list_topics(timeout=10).topics
    missing = [s for s in specs if s.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, 1, config=s.configs) for s in missing]
        )
        for name, fut in futures.items():
            try:
                fut.result()
                done.append(f"created {name}")
            except KafkaException as exc:
                # Another process may have created it between list and create.
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    for spec in specs:
        if spec.name in existing:
            have = len(existing[spec.name].partitions)
            if have < spec.partitions:
                admin.create_partitions(
                    [NewPartitions(spec.name, spec.partitions)]
                )[spec.name].result()
                done.append(f"grew {spec.name} to {spec.partitions} partitions")
            resource = ConfigResource(
                ResourceType.TOPIC,
                spec.name,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                    for k, v in spec.configs.items()
                ],
            )
            admin.incremental_alter_configs([resource])[resource].result()
    return done
