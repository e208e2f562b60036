"""Ceilings: what the raw clients and servers do on this machine, next to which our numbers sit.

    python bench/ceilings.py [--messages 200000] [--rows 50000]

- Kafka with confluent-kafka (the aggregator's and sinks' client): produce (acks=all,
  idempotent) and consume N cart-event-sized records on a fresh 6-partition topic.
- Kafka with kafka-python (the write API's client): produce with acks=all from one thread.
- Redis: `redis-benchmark` SET of cart-sized values, pipelined (the Redis sink's best case).
- PostgreSQL: a raw `INSERT ... ON CONFLICT DO UPDATE ... WHERE version <` loop, 1,000 rows per
  transaction, into a table shaped like `carts` (the PostgreSQL sink's best case).
Writes bench/results/ceilings.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer

RESULTS = Path(__file__).resolve().parent / "results"
VALUE = json.dumps({"schemaVersion": 1, "eventId": str(uuid.uuid4()), "type": "ITEM_ADDED",
                    "customerId": "customer-12345", "itemId": "17", "qty": 2,
                    "occurredAt": "2026-11-30T10:00:00.000000Z"}).encode()
DOC = json.dumps({"lineItems": [{"itemId": str(i), "itemName": f"Product {i}", "qty": 2,
                                 "unitPrice": "123.45", "totalPrice": "246.90"}
                                for i in range(3)], "pad": "x" * 300})


def kafka_confluent(bootstrap: str, n: int) -> dict[str, float]:
    """Produce then consume n records with confluent-kafka; records/s of each."""
    topic = f"ceiling-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(timeout=30)
    try:
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 5, "queue.buffering.max.messages": 500_000})
        start = time.monotonic()
        for i in range(n):
            while True:
                try:
                    p.produce(topic, VALUE, f"customer-{i % 10_000}".encode())
                    break
                except BufferError:
                    p.poll(0.01)
        assert p.flush(120) == 0
        produce_s = time.monotonic() - start
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ceiling-{uuid.uuid4()}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        got, start = 0, None
        while got < n:
            batch = c.consume(1000, 1.0)
            if batch and start is None:
                start = time.monotonic()
            got += sum(1 for m in batch if m.error() is None)
        consume_s = time.monotonic() - (start or time.monotonic())
        c.close()
    finally:
        admin.delete_topics([topic])
    return {"produce_per_s": round(n / produce_s), "consume_per_s": round(n / consume_s)}


def kafka_python_produce(bootstrap: str, n: int) -> dict[str, float]:
    """Produce n records with kafka-python (acks=all), as fast as one thread can."""
    topic = f"ceiling-kp-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(timeout=30)
    try:
        p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
        p.send(topic, VALUE, key=b"warm-up").get(timeout=30)
        start = time.monotonic()
        futures = [p.send(topic, VALUE, key=f"customer-{i % 10_000}".encode()) for i in range(n)]
        p.flush(120)
        for f in futures:
            f.get(timeout=0)
        seconds = time.monotonic() - start
        p.close()
    finally:
        admin.delete_topics([topic])
    return {"produce_per_s": round(n / seconds)}


def redis_set(redis_url: str, n: int) -> dict[str, Any]:
    """redis-benchmark SET with cart-sized values, 100 commands per pipeline."""
    if not shutil.which("redis-benchmark"):
        return {"skipped": "redis-benchmark not installed"}
    u = urlparse(redis_url)
    out = subprocess.run(
        ["redis-benchmark", "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 6379), "-q",
         "-t", "set", "-n", str(n), "-P", "100", "-d", str(len(DOC)), "-r", "100000"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    m = re.search(r"SET: ([\d.]+) requests per second", out)
    return {"set_per_s": round(float(m.group(1))) if m else None, "value_bytes": len(DOC)}


def postgres_upsert(database_url: str, rows: int, customers: int = 20_000) -> dict[str, float]:
    """Raw version-guarded upserts, 1,000 per transaction; rows/s."""
    table = f"ceiling_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (cart_id text PRIMARY KEY, "
                     "customer_id text NOT NULL, version bigint NOT NULL, doc jsonb NOT NULL)")
        sql = (f"INSERT INTO {table} AS t VALUES (%s, %s, %s, %s) ON CONFLICT (cart_id) DO "
               "UPDATE SET version = EXCLUDED.version, doc = EXCLUDED.doc "
               "WHERE t.version < EXCLUDED.version")
        try:
            start = time.monotonic()
            for base in range(0, rows, 1000):
                batch = [(f"c{i % customers}:1", f"c{i % customers}", i, DOC)
                         for i in range(base, min(rows, base + 1000))]
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(sql, batch)
            seconds = time.monotonic() - start
        finally:
            conn.execute(f"DROP TABLE {table}")
    return {"upsert_per_s": round(rows / seconds)}


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--kafka-python-messages", type=int, default=50_000)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    database_url = os.environ.get("DATABASE_URL",
                                  "postgresql://cartstream@127.0.0.1:5432/cartstream")
    result = {
        "kafka_confluent": kafka_confluent(bootstrap, args.messages),
        "kafka_python": kafka_python_produce(bootstrap, args.kafka_python_messages),
        "redis": redis_set(redis_url, args.messages),
        "postgres": postgres_upsert(database_url, args.rows),
        "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ceilings.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
