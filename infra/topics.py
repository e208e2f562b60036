"""Create Cartstream's Kafka topics idempotently, with explicit configs."""

from __future__ import annotations

import argparse
import logging
import os
import sys
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

from cart_contract.retry import retrying


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


def main(argv: list[str] | None = None) -> int:
    """Command line: wait for the broker, then create or converge the topics."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092"))
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the broker")
    parser.add_argument("--check-only", action="store_true", help="only wait for the broker")
    args = parser.parse_args(argv)
    try:
        admin = wait_for_broker(args.bootstrap, args.wait)
    except TimeoutError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check_only:
        return 0
    for line in ensure_topics(admin, topic_specs()):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
