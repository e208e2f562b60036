"""Bytes per cart in each store, measured on real servers: what bench/capacity.py plans with.

    python -m bench.storage [--carts 2000] [--lines 1 3 10] [--events 20000]

1. Folds add events through the aggregator's own fold (FoldLogic, as snapshot_bytes in
   bench/aggregator.py does) into carts of each line count, so the cart-details records are the
   bytes the aggregator emits today (with the customer view), for customer ids of a typical
   length and a catalog of typical product names.
2. Redis: writes them with the redis sink's own code (RedisCarts.put_docs) under a fresh key
   prefix and asks `MEMORY USAGE key SAMPLES 0` of every key (the key's own allocation), and
   `INFO memory` before and after (what the keys cost the server, its main dict included).
3. PostgreSQL: writes them with the postgres sink's own code (upsert_cart_docs) into a fresh,
   migrated database and reports, per cart, pg_column_size of the rows of `customers`, `carts`
   and `cart_lines`, and the tables' total size (heap, TOAST and indexes) per cart.
4. Kafka: the JSON sizes of a cart event and a cart-details record, and the bytes each
   cart-events record takes in the broker's log segment when produced as the write API does
   (idempotent, linger 5 ms, no compression), read from the local broker's log directory.

Cleans up the keys, the database and the topic. Writes bench/results/storage.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cart_aggregator.flow import FoldLogic  # noqa: E402
from cart_aggregator.join import product_tuple  # noqa: E402
from cart_contract import (  # noqa: E402
    EventType,
    Product,
    decode_cart_details,
    encode_cart_event,
    new_cart_event,
)
from cart_contract.redis_carts import RedisCarts  # noqa: E402
from connectors.migrate import migrate  # noqa: E402
from connectors.stores import upsert_cart_docs  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "storage.json"
# Typical shapes: a 17-character customer id, product names of 20-30 characters.
PRODUCT_NAMES = ["Samsung Galaxy S21 128 GB", "Apple iPhone 12 Pro Max", "Sony WH-1000XM4 Black",
                 "Logitech MX Master 3S", "Kindle Paperwhite 16 GB", "Nintendo Switch OLED",
                 "Dyson V15 Detect Absolute", "Bose QuietComfort Earbuds", "GoPro HERO11 Black",
                 "Philips Hue White Starter Kit", "Anker PowerCore 20000", "Fitbit Charge 5"]


def catalog() -> dict[str, Product]:
    """A catalog with the names above, prices with cents."""
    return {str(i + 1): Product(str(i + 1), name, Decimal(f"{149 + 37 * i}.99"), 10**6)
            for i, name in enumerate(PRODUCT_NAMES)}


def folded_carts(n: int, lines: int, tag: str) -> list[bytes]:
    """n cart-details records (the aggregator's bytes) of open carts with `lines` lines each."""
    products = catalog()
    tuples = {pid: product_tuple(p) for pid, p in products.items()}
    ids = list(products)
    out: list[bytes] = []
    offset = 0
    for c in range(n):
        logic = FoldLogic(None)
        customer = f"{tag}{c:08d}"
        last = b""
        for line in range(lines):
            item = ids[(c + line) % len(ids)]
            ev = new_cart_event(EventType.ITEM_ADDED, customer, item, 1 + line % 3)
            w = (ev.event_id, ev.type.value, ev.customer_id, ev.item_id, ev.qty, ev.occurred_at,
                 0, offset, None)
            records, _ = logic.on_batch([w, (offset, tuples[item])])
            offset += 1
            last = [r for r in records if type(r) is bytes][-1]
        out.append(last)
    return out


def redis_bytes(url: str, docs: list[bytes], tag: str) -> dict[str, Any]:
    """MEMORY USAGE of each cart key, and used_memory's growth per key, via the sink's code."""
    client = redis.Redis.from_url(url)
    prefix = f"bench:{tag}:"
    carts = RedisCarts(client, channel=f"bench:{tag}:updates", prefix=prefix)
    before = int(client.info("memory")["used_memory"])
    for i in range(0, len(docs), 500):
        carts.put_docs([(decode_cart_details(d), d) for d in docs[i:i + 500]], notify=False)
    after = int(client.info("memory")["used_memory"])
    keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
    usage = [int(client.memory_usage(k, samples=0) or 0) for k in keys]
    encoding = client.object("encoding", keys[0]).decode() if keys else None
    for i in range(0, len(keys), 1000):
        client.unlink(*keys[i:i + 1000])
    client.close()
    return {"keys": len(keys), "encoding": encoding,
            "memory_usage_bytes_median": int(statistics.median(usage)),
            "memory_usage_bytes_max": max(usage),
            "used_memory_growth_per_key": round((after - before) / max(1, len(keys)))}


def postgres_bytes(server_url: str, docs: list[bytes], tag: str) -> dict[str, Any]:
    """Row sizes (pg_column_size) and table size per cart, via the sink's code, fresh database."""
    db = f"bench_storage_{tag}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    url = server_url.rsplit("/", 1)[0] + f"/{db}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            for i in range(0, len(docs), 1000):
                upsert_cart_docs(conn, [(decode_cart_details(d), d) for d in docs[i:i + 1000]])
            conn.execute("VACUUM ANALYZE")
            n = len(docs)
            out: dict[str, Any] = {"carts": n}
            for table in ("customers", "carts", "cart_lines"):
                rows, row_bytes, total = conn.execute(
                    f"SELECT count(*), coalesce(avg(pg_column_size(t.*)), 0), "
                    f"pg_total_relation_size('{table}') FROM {table} t").fetchone()
                out[table] = {"rows_per_cart": round(rows / n, 2),
                              "row_bytes_avg": round(float(row_bytes)),
                              "total_bytes_per_cart": round(total / n)}
            out["total_bytes_per_cart"] = sum(out[t]["total_bytes_per_cart"]
                                              for t in ("customers", "carts", "cart_lines"))
            return out
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def log_dir() -> Path | None:
    """The local broker's log.dirs (the stack's server.properties under RUN_DIR, default .run/
    of this checkout), if readable."""
    props = Path(os.environ.get("RUN_DIR", ROOT / ".run")) / "kafka" / "server.properties"
    if not props.exists():
        return None
    for line in props.read_text().splitlines():
        if line.startswith("log.dirs="):
            return Path(line.split("=", 1)[1].split(",")[0])
    return None


def kafka_bytes(bootstrap: str, events: int, tag: str) -> dict[str, Any]:
    """Bytes on the broker's disk per cart-events record, produced as the write API does."""
    topic = f"bench-{tag}-storage"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(timeout=30)
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                             "enable.idempotence": True, "linger.ms": 5,
                             "partitioner": "murmur2_random"})
        value_sizes = []
        for i in range(events):
            ev = new_cart_event(EventType.ITEM_ADDED, f"{tag}{i % 5000:08d}", str(i % 12 + 1), 1)
            value = encode_cart_event(ev)
            value_sizes.append(len(value))
            while True:
                try:
                    producer.produce(topic, value, ev.customer_id.encode())
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(60) == 0
        logs = log_dir()
        on_disk = None
        if logs is not None and logs.exists():
            time.sleep(1)
            on_disk = sum(f.stat().st_size for d in logs.glob(f"{topic}-*")
                          for f in d.glob("*.log"))
        return {"events": events, "event_value_bytes_median": int(statistics.median(value_sizes)),
                "log_bytes_per_event": round(on_disk / events, 1) if on_disk else None,
                "log_dir": str(logs) if logs else None}
    finally:
        admin.delete_topics([topic])


def main(argv: list[str] | None = None) -> int:
    """Measure and write bench/results/storage.json."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--carts", type=int, default=2000, help="carts per line count")
    p.add_argument("--lines", type=int, nargs="+", default=[1, 3, 10])
    p.add_argument("--events", type=int, default=20000, help="events produced for log bytes")
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092"))
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--database-url", default=os.environ.get(
        "DATABASE_URL", "postgresql://cartstream@127.0.0.1:5432/cartstream"))
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    by_lines: dict[str, Any] = {}
    for lines in args.lines:
        docs = folded_carts(args.carts, lines, f"s{tag}-")
        row = {"cart_details_bytes_median": int(statistics.median(len(d) for d in docs)),
               "redis": redis_bytes(args.redis_url, docs, f"{tag}{lines}"),
               "postgres": postgres_bytes(args.database_url, docs, f"{tag}_{lines}")}
        by_lines[str(lines)] = row
        print(f"{lines} line(s): {json.dumps(row)}", flush=True)
    kafka = kafka_bytes(args.bootstrap, args.events, tag)
    print(f"kafka: {json.dumps(kafka)}")
    report = {"benchmark": "storage", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"python": platform.python_version(), "platform": platform.platform()},
              "customer_id_chars": len(f"s{tag}-00000000"), "carts_per_line_count": args.carts,
              "by_lines": by_lines, "kafka": kafka}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
