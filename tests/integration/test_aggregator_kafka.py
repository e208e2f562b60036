"""The aggregator on real Kafka: its carts equal the fold of the log, even after kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cart_aggregator.fold import fold, to_cart_details
from cart_contract import (
    CartDetails,
    CartEvent,
    EventPosition,
    EventType,
    Product,
    decode_cart_details,
    decode_cart_event,
    encode_cart_event,
    encode_product,
    new_cart_event,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def make_topics(bootstrap: str, tag: str) -> dict[str, str]:
    names = {
        "TOPIC_CART_EVENTS": (f"agg-{tag}-events", 3),
        "TOPIC_PRODUCTS": (f"agg-{tag}-products", 2),
        "TOPIC_CART_DETAILS": (f"agg-{tag}-details", 3),
        "TOPIC_DEAD_LETTER": (f"agg-{tag}-dead", 1),
    }
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(n, p, 1) for n, p in names.values()]).values():
        fut.result(timeout=30)
    return {k: n for k, (n, _) in names.items()}


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for key, value in records:
        producer.produce(topic, value, key)
        producer.poll(0)
    assert producer.flush(60) == 0


def read_all(bootstrap: str, topic: str) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{time.time_ns()}",
                         "enable.auto.commit": False})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    out = []
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high <= low:
            continue
        consumer.assign([TopicPartition(topic, p, low)])
        got = 0
        while got < high - low:
            for m in consumer.consume(5000, timeout=5):
                if m.error() is None:
                    out.append(m)
                    got += 1
    consumer.close()
    return out


def latest_carts(bootstrap: str, topic: str) -> dict[str, CartDetails]:
    best: dict[str, CartDetails] = {}
    for m in read_all(bootstrap, topic):
        c = decode_cart_details(m.value())
        if c.customer_id not in best or c.version > best[c.customer_id].version:
            best[c.customer_id] = c
    return best


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "cart_aggregator"], cwd=ROOT, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_kill_9_and_restart_give_the_carts_of_the_fold(kafka_bootstrap: str, unique: str,
                                                      tmp_path: Path) -> None:
    rng = random.Random(unique)
    topics = make_topics(kafka_bootstrap, unique)
    env = {**os.environ, **topics, "KAFKA_BOOTSTRAP": kafka_bootstrap, "RUN_DIR": str(tmp_path),
           "AGG_SNAPSHOT_INTERVAL_S": "1", "AGG_BACKUP_INTERVAL_S": "0",
           "AGG_METRICS_PORT": str(rng.randint(20000, 30000)), "PYTHONUNBUFFERED": "1"}
    # The catalog changes while the flow runs: products 11-15 appear only in the second phase,
    # after events that reference them, so those adds must wait for them.
    first = {str(i): Product(str(i), f"P{i}", Decimal(f"{i}.10"), 30) for i in range(1, 11)}
    later = {str(i): Product(str(i), f"Late {i}", Decimal(f"{i}.99"), 30) for i in range(11, 16)}
    catalog = {**first, **later}
    customers = [f"k{unique}-{i}" for i in range(200)]
    events: list[CartEvent] = []
    for _ in range(4000):
        kind = rng.choices(list(EventType), [60, 20, 12, 8])[0]
        item = str(rng.randint(1, 15)) if kind in (EventType.ITEM_ADDED,
                                                   EventType.ITEM_REMOVED) else None
        events.append(new_cart_event(kind, rng.choice(customers), item,
                                     rng.randint(1, 4) if kind is EventType.ITEM_ADDED else None))

    produce(kafka_bootstrap, topics["TOPIC_PRODUCTS"],
            [(p.product_id.encode(), encode_product(p)) for p in first.values()])
    log = tmp_path / "aggregator.log"
    proc = start(env, log)
    for chunk in range(4):
        produce(kafka_bootstrap, topics["TOPIC_CART_EVENTS"],
                [(e.customer_id.encode(), encode_cart_event(e))
                 for e in events[chunk * 1000:(chunk + 1) * 1000]])
        if chunk == 1:
            produce(kafka_bootstrap, topics["TOPIC_PRODUCTS"],
                    [(p.product_id.encode(), encode_product(p)) for p in later.values()])
        time.sleep(rng.uniform(1.0, 3.0))
        kill9(proc)  # at a random moment of the run, three times in all
        if chunk < 3:
            proc = start(env, log)
    proc = start(env, log)

    log_records = read_all(kafka_bootstrap, topics["TOPIC_CART_EVENTS"])
    positioned = []
    for m in log_records:
        ev = decode_cart_event(m.value())
        positioned.append((ev, EventPosition(ev.event_id, m.partition(), m.offset())))
    positioned.sort(key=lambda t: (t[1].partition, t[1].offset))
    expected = {c: to_cart_details(s) for c, s in
                fold(positioned, lambda ev: catalog.get(ev.item_id or "")).items()}
    try:
        deadline = time.monotonic() + 120
        while True:
            got = latest_carts(kafka_bootstrap, topics["TOPIC_CART_DETAILS"])
            if all(c in got and got[c].version >= expected[c].version for c in expected):
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "aggregator did not catch up"
            time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert got == expected
    # Recovery may repeat output, but never skip or invent a version.
    versions: dict[str, set[int]] = {}
    for m in read_all(kafka_bootstrap, topics["TOPIC_CART_DETAILS"]):
        c = decode_cart_details(m.value())
        versions.setdefault(c.customer_id, set()).add(c.version)
    assert all(v == set(range(1, expected[c].version + 1)) for c, v in versions.items())
