"""The foundation: real Kafka, Redis and PostgreSQL answer, and topics carry their configs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from kafka import KafkaConsumer, KafkaProducer

from infra.topics import topic_specs
from tests.support.connectors import wait_for_partitions

pytestmark = pytest.mark.integration
KAFKA_BIN = Path(__file__).resolve().parents[2] / "infra" / "kafka" / "bin"


def test_kafka_python_round_trip(kafka_bootstrap: str, scratch_topic: str, unique: str) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    meta = producer.send(scratch_topic, key=b"k-" + unique.encode(), value=b"v1").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        scratch_topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
    )
    got = [(m.key, m.value, m.offset) for m in consumer]
    consumer.close()
    assert got == [(b"k-" + unique.encode(), b"v1", meta.offset)]


def test_confluent_kafka_round_trip(kafka_bootstrap: str, scratch_topic: str, unique: str) -> None:
    acked: list[tuple[str | None, int]] = []
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all",
                         "enable.idempotence": True})
    producer.produce(scratch_topic, key=unique, value=b"hello",
                     on_delivery=lambda err, msg: acked.append((err, msg.offset())))
    assert producer.flush(30) == 0
    assert acked == [(None, 0)]
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{unique}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([scratch_topic])
    msg = None
    for _ in range(60):
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            break
    consumer.close()
    assert msg is not None and msg.error() is None
    assert (msg.key(), msg.value()) == (unique.encode(), b"hello")


def test_topics_have_the_specified_configs(kafka_bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    metadata = admin.list_topics(timeout=10).topics
    specs = {s.name: s for s in topic_specs()}
    by_name = {
        "cart-events": ("delete", "-1"),
        "product-details-events": ("compact", None),
        "cart-details-event": ("compact", None),
    }
    for name, (policy, retention) in by_name.items():
        spec = specs[os.environ.get(f"TOPIC_{name}", name)]
        assert len(metadata[spec.name].partitions) >= spec.partitions
        resource = ConfigResource(ResourceType.TOPIC, spec.name)
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        assert configs["cleanup.policy"].value == policy
        assert configs["min.insync.replicas"].value == "1"
        if retention is not None:
            assert configs["retention.ms"].value == retention
    assert len(metadata["cart-events"].partitions) == 6


def test_redis_answers(redis_url: str, unique: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(f"test:{unique}", "1", ex=60)
    assert client.get(f"test:{unique}") == b"1"


def test_postgres_answers(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)


@pytest.mark.skipif(not (KAFKA_BIN / "kafka-run-class").exists(), reason="needs the local jars")
def test_console_producer_seed_command(kafka_bootstrap: str, scratch_topic: str) -> None:
    line = '1:{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}\n'
    subprocess.run(
        [str(KAFKA_BIN / "kafka-console-producer"), "--topic", scratch_topic,
         "--bootstrap-server", kafka_bootstrap, "--property", "parse.key=true",
         "--property", "key.separator=:"],
        input=line, text=True, check=True, timeout=60, capture_output=True,
    )
    out = subprocess.run(
        [str(KAFKA_BIN / "kafka-console-consumer"), "--topic", scratch_topic,
         "--bootstrap-server", kafka_bootstrap, "--from-beginning", "--max-messages", "1",
         "--timeout-ms", "20000", "--property", "print.key=true",
         "--property", "key.separator=:"],
        text=True, check=True, timeout=60, capture_output=True,
    ).stdout
    # The tool prints a deprecation notice for --property on stdout first.
    assert out.strip().splitlines()[-1] == line.strip()


def test_the_topics_command_creates_converges_and_waits(kafka_bootstrap: str,
                                                        unique: str) -> None:
    from tests.support.cli import cartstream

    names = {f"TOPIC_{k}": f"t-{unique}-{k.lower()}"
             for k in ("CART_EVENTS", "PRODUCTS", "CART_DETAILS", "DEAD_LETTER",
                       "CART_RESERVATIONS", "PRODUCT_RESERVATIONS")}
    env = {**names, "KAFKA_BOOTSTRAP": kafka_bootstrap, "CART_EVENTS_PARTITIONS": "2",
           "PRODUCTS_PARTITIONS": "1", "CART_DETAILS_PARTITIONS": "1"}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        first = cartstream("topics", "--wait", "30", env=env)
        assert first.exit_code == 0, first.output
        assert sorted(first.stdout.split()) == sorted(["created"] * len(names)
                                                      + list(names.values()))
        again = cartstream("topics", env={**env, "CART_EVENTS_PARTITIONS": "3"})
        assert again.exit_code == 0, again.output
        assert again.stdout == f"grew {names['TOPIC_CART_EVENTS']} to 3 partitions\n"
        wait_for_partitions(kafka_bootstrap, {names["TOPIC_CART_EVENTS"]: 3})
        assert cartstream("topics", "--check-only", env=env).stdout == ""
    finally:
        admin.delete_topics(list(names.values()))
    nobody = cartstream("topics", "--check-only", "--wait", "1", "--bootstrap", "127.0.0.1:1")
    assert nobody.exit_code == 2
    assert nobody.stderr.startswith("cartstream: topics: Kafka at 127.0.0.1:1 did not answer")
