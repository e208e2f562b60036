"""Create Cartstream's Kafka topics idempotently, with explicit configs (`cartstream topics`)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class TopicSpec:
    """A topic's name, partition count and the configs we insist on."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def topic_specs(env: os._Environ[str] | dict[str, str] = os.environ) -> list[TopicSpec]:
    """The topics the system needs, named and sized from the environment."""
    forever = {"retention.ms": "-1", "retention.bytes": "-1"}
    return [
        # The event store: never expires, one node so one in-sync replica is the most we can ask.
        TopicSpec(
            env.get("TOPIC_CART_EVENTS", "cart-events"),
            int(env.get("CART_EVENTS_PARTITIONS", "6")),
            {"cleanup.policy": "delete", "min.insync.replicas": "1", **forever},
        ),
        TopicSpec(
            env.get("TOPIC_PRODUCTS", "product-details-events"),
            int(env.get("PRODUCTS_PARTITIONS", "3")),
            {"cleanup.policy": "compact", "min.insync.replicas": "1"},
        ),
        TopicSpec(
            env.get("TOPIC_CART_DETAILS", "cart-details-event"),
            int(env.get("CART_DETAILS_PARTITIONS", "6")),
            {"cleanup.policy": "compact", "min.insync.replicas": "1"},
        ),
        TopicSpec(
            env.get("TOPIC_DEAD_LETTER", "cartstream-dead-letter"),
            1,
            {"cleanup.policy": "delete", "min.insync.replicas": "1", **forever},
        ),
    ]


def wait_for_broker(bootstrap: str, timeout_s: float) -> AdminClient:
    """Return an admin client once the broker answers a metadata request, else raise."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=2)
            return admin
        except KafkaException as exc:
            last = exc
            time.sleep(0.5)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f}s: {last}")


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
