"""Create Cartstream's Kafka topics idempotently, with explicit configs (`cartstream topics`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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
from pydantic import Field, ValidationInfo, field_validator, model_validator

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
    # One broker by default; the local cluster mode (`make up BROKERS=3`) sets 3. Every topic,
    # the event store first, is kept on this many brokers.
    replication_factor: Annotated[int, Field(
        ge=1, validation_alias="KAFKA_REPLICATION_FACTOR",
        description="replicas of every topic (brokers it is kept on); `cartstream topics` "
                    "waits until this many brokers are up")] = 1
    # acks=all waits for this many replicas: with 3 replicas and 2 required, one broker may be
    # down (or being replaced) while writes go on, and an acknowledged write is on 2 brokers.
    min_insync_replicas: Annotated[int, Field(
        ge=1, validation_alias="KAFKA_MIN_INSYNC_REPLICAS",
        description="`min.insync.replicas` of every topic: replicas that must have a write "
                    "before it is acknowledged",
        json_schema_extra={"shown_default": "2 when `KAFKA_REPLICATION_FACTOR` >= 3, else 1"},
    )] = None  # type: ignore[assignment]

    @field_validator("min_insync_replicas", mode="before")
    @classmethod
    def _default_min_insync(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return 2 if info.data.get("replication_factor", 1) >= 3 else 1
        return value

    @model_validator(mode="after")
    def _min_insync_fits(self) -> TopicSettings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                "KAFKA_MIN_INSYNC_REPLICAS must not exceed KAFKA_REPLICATION_FACTOR, got "
                f"{self.min_insync_replicas} > {self.replication_factor}")
        return self


@dataclass(frozen=True)
class TopicSpec:
    """A topic's name, partition count, replication factor and the configs we insist on."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    replication_factor: int = 1


def topic_specs(env: Mapping[str, str] | None = None) -> list[TopicSpec]:
    """The topics the system needs, named and sized from the environment (or `env`)."""
    s = TopicSettings.from_env(env)
    forever = {"retention.ms": "-1", "retention.bytes": "-1"}
    isr = str(s.min_insync_replicas)
    specs = [
        # The event store: never expires; as many in-sync replicas as the cluster can give.
        TopicSpec(
            s.topic_cart_events,
            s.cart_events_partitions,
            {"cleanup.policy": "delete", "min.insync.replicas": isr, **forever},
        ),
        TopicSpec(
            s.topic_products,
            s.products_partitions,
            {"cleanup.policy": "compact", "min.insync.replicas": isr},
        ),
        TopicSpec(
            s.topic_cart_details,
            s.cart_details_partitions,
            {"cleanup.policy": "compact", "min.insync.replicas": isr},
        ),
        # The stock decisions' request log: one partition, so the reservation stage decides in
        # one order that a resume re-reads (docs/architecture.md, "Stock at checkout"). Kept
        # forever like the event store: the ledger's history is in it.
        TopicSpec(
            s.topic_cart_reservations,
            1,
            {"cleanup.policy": "delete", "min.insync.replicas": isr, **forever},
        ),
        TopicSpec(
            s.topic_product_reservations,
            s.products_partitions,
            {"cleanup.policy": "compact", "min.insync.replicas": isr},
        ),
        TopicSpec(
            s.topic_dead_letter,
            1,
            {"cleanup.policy": "delete", "min.insync.replicas": isr, **forever},
        ),
    ]
    return [replace(spec, replication_factor=s.replication_factor) for spec in specs]


class TooFewBrokers(KafkaException):
    """The cluster answers but fewer brokers than asked for have joined it yet."""


def wait_for_broker(kafka: str | Mapping[str, Any], timeout_s: float,
                    brokers: int = 1) -> AdminClient:
    """Return an admin client once `brokers` brokers are in the cluster's metadata, else raise.

    `kafka`: bootstrap servers, or a client config (`KafkaClientSettings.kafka_client`). A topic
    with replication factor N can only be created once N brokers have registered, and a
    cluster's brokers join one by one after its first one answers."""
    conf = client_config(kafka)
    bootstrap = conf["bootstrap.servers"]
    admin = AdminClient({**conf, "log_level": 0})

    def enough() -> None:
        have = len(admin.list_topics(timeout=2).brokers)
        if have < brokers:
            raise TooFewBrokers(f"{have} of {brokers} brokers up")

    # A broker that is still starting is expected here: its failures are logged at INFO only.
    answer = retrying(f"Kafka at {bootstrap}: metadata", on=KafkaException, deadline_s=timeout_s,
                      first_s=0.5, max_s=0.5, level=logging.INFO)
    try:
        answer.call(enough)
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
            [NewTopic(s.name, s.partitions, s.replication_factor, config=s.configs)
             for s in missing]
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
            partitions = existing[spec.name].partitions
            have = len(partitions)
            replicas = min(len(p.replicas) for p in partitions.values())
            configs = spec.configs
            if replicas < spec.replication_factor:
                # Changing replicas is a reassignment (kafka-reassign-partitions), not ours to do;
                # asking more in-sync replicas than the topic has would refuse every write.
                done.append(f"{spec.name} has {replicas} replica(s), not "
                            f"{spec.replication_factor}: left as is (docs/operations.md)")
                isr = min(int(configs.get("min.insync.replicas", "1")), replicas)
                configs = {**configs, "min.insync.replicas": str(isr)}
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
                    for k, v in configs.items()
                ],
            )
            admin.incremental_alter_configs([resource])[resource].result()
    return done
