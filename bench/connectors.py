"""Sink throughput: N cart-details records from Kafka through the real sink code into each store.

    python bench/connectors.py [--records 100000] [--customers 20000]

Preloads a fresh topic, then runs the Redis sink and the PostgreSQL sink (fresh database) from
the start of it until every record is stored and committed. Writes bench/results/connectors.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cart_contract import (  # noqa: E402
    CartDetails,
    EventPosition,
    LineItem,
    encode_cart_details,
)
from connectors.consumer import DeadLetters, Stopper, run  # noqa: E402
from connectors.sinks import PostgresCartSink, RedisCartSink  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def record(customer: str, version: int, rng: random.Random) -> CartDetails:
    """A realistic cart: 1-4 lines."""
    lines = []
    for i in range(rng.randint(1, 4)):
        price = Decimal(f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}")
        qty = rng.randint(1, 5)
        lines.append(LineItem(str(i + 1), f"Product {i + 1}", qty, price, price * qty))
    return CartDetails(customer, f"{customer}:1", "OPEN", tuple(lines),
                       sum(li.qty for li in lines), sum((li.total_price for li in lines),
                                                        Decimal(0)),
                       version, EventPosition(str(uuid.uuid4()), 0, version), (),
                       "2026-11-22T10:00:00.000000Z")


def preload(bootstrap: str, topic: str, n: int, customers: int) -> None:
    """Fill the topic with n records; versions grow per customer."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(timeout=30)
    rng = random.Random(3)
    versions: dict[str, int] = {}
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                  "queue.buffering.max.messages": 500000})
    for _ in range(n):
        c = f"b{rng.randrange(customers)}"
        versions[c] = versions.get(c, 0) + 1
        while True:
            try:
                p.produce(topic, encode_cart_details(record(c, versions[c], rng)), c.encode())
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0


def drain(bootstrap: str, topic: str, group: str, store) -> float:
    """Run the sink loop from the beginning until caught up; return seconds."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    until = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
             for p in range(6)}
    probe.close()
    start = time.monotonic()
    run(bootstrap=bootstrap, topic=topic, group=group, store=store,
        dead_letters=DeadLetters(bootstrap, topic + "-dead", "bench"), stopper=Stopper(),
        until={p: h for p, h in until.items() if h > 0})
    return time.monotonic() - start


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    database_url = os.environ.get("DATABASE_URL",
                                  "postgresql://cartstream@127.0.0.1:5432/cartstream")
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-{tag}-details"
    preload(bootstrap, topic, args.records, args.customers)
    # A Redis database of its own, so the bench neither reads nor clobbers real carts.
    bench_redis = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/2")
    bench_redis.flushdb()
    db = f"bench_{tag}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    results = {}
    secs = drain(bootstrap, topic, f"bench-{tag}-redis", RedisCartSink(bench_redis, "bench"))
    results["redis"] = {"records": args.records, "seconds": round(secs, 2),
                        "records_per_s": round(args.records / secs), "target": 20_000}
    secs = drain(bootstrap, topic, f"bench-{tag}-pg",
                 PostgresCartSink(database_url.rsplit("/", 1)[0] + f"/{db}"))
    results["postgres"] = {"records": args.records, "seconds": round(secs, 2),
                           "records_per_s": round(args.records / secs), "target": 10_000}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{db}"')
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "connectors.json").write_text(json.dumps(results, indent=2))
    print("| sink | records/s | target |\n|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['records_per_s']} | {r['target']} |")


if __name__ == "__main__":
    main()
