"""Aggregator throughput: preload N cart events, run the flow from the start, time it.

    python bench/aggregator.py [--events 200000] [--customers 20000] [--processes 1 2]

Reports sustained events/s (first output record to last), peak RSS of each process, and the
pickled size of a typical open cart's state (what a snapshot copies). Writes
bench/results/aggregator.json. Runs on fresh topics of the local stack's broker.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cart_aggregator.fold import apply  # noqa: E402
from cart_aggregator.stages import ResequenceState  # noqa: E402
from cart_contract import (  # noqa: E402
    EventPosition,
    EventType,
    Product,
    encode_cart_event,
    encode_product,
    new_cart_event,
)

RESULTS = ROOT / "bench" / "results"


def preload(bootstrap: str, tag: str, events: int, customers: int) -> dict[str, str]:
    """Create fresh topics and fill them with a catalog and a random cart workload."""
    topics = {"TOPIC_CART_EVENTS": (f"bench-{tag}-events", 6),
              "TOPIC_PRODUCTS": (f"bench-{tag}-products", 3),
              "TOPIC_CART_DETAILS": (f"bench-{tag}-details", 6),
              "TOPIC_DEAD_LETTER": (f"bench-{tag}-dead", 1)}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(n, p, 1) for n, p in topics.values()]).values():
        f.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20,
                         "compression.type": "lz4", "queue.buffering.max.messages": 500000})
    for i in range(1, 1001):
        p = Product(str(i), f"Product {i}", Decimal(f"{i}.99"), 1000)
        producer.produce(topics["TOPIC_PRODUCTS"][0], encode_product(p), str(i).encode())
    rng = random.Random(1)
    kinds = [EventType.ITEM_ADDED] * 7 + [EventType.ITEM_REMOVED] * 2 + [EventType.CHECKOUT]
    for _ in range(events):
        kind = rng.choice(kinds)
        cid = f"c{rng.randrange(customers)}"
        item = str(rng.randint(1, 1000)) if kind is not EventType.CHECKOUT else None
        ev = new_cart_event(kind, cid, item, rng.randint(1, 3) if kind is EventType.ITEM_ADDED
                            else None)
        while True:
            try:
                producer.produce(topics["TOPIC_CART_EVENTS"][0], encode_cart_event(ev),
                                 cid.encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0
    return {k: n for k, (n, _) in topics.items()}


def output_count(consumer: Consumer, topic: str) -> int:
    """Records in the topic now (sum of high watermarks); 0 while metadata settles."""
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(6))
    except KafkaException:
        return 0


def peak_rss_kib(pid: int) -> int:
    """VmHWM of a process, in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def run_flow(bootstrap: str, topics: dict[str, str], events: int, processes: int) -> dict:
    """Run the aggregator with `processes` processes until every event produced output."""
    run_dir = Path(tempfile.mkdtemp(prefix="agg-bench-"))
    env = {**os.environ, **topics, "KAFKA_BOOTSTRAP": bootstrap, "RUN_DIR": str(run_dir),
           "AGG_SNAPSHOT_INTERVAL_S": "10", "PYTHONUNBUFFERED": "1"}
    addrs = [f"127.0.0.1:{21000 + i}" for i in range(processes)]
    procs = []
    for i in range(processes):
        extra = [] if processes == 1 else ["-i", str(i)] + [x for a in addrs for x in ("-a", a)]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "cart_aggregator", *extra], cwd=ROOT,
            env={**env, "AGG_METRICS_PORT": str(23030 + i)},
            stdout=open(run_dir / f"agg-{i}.log", "wb"), stderr=subprocess.STDOUT))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    start = time.monotonic()
    first = None
    peaks = [0] * processes
    try:
        while True:
            n = output_count(consumer, topics["TOPIC_CART_DETAILS"])
            now = time.monotonic()
            if n and first is None:
                first = (now, n)
            peaks = [max(p, peak_rss_kib(pr.pid)) for p, pr in zip(peaks, procs, strict=True)]
            if n >= events:
                break
            if any(pr.poll() is not None for pr in procs) or now - start > 600:
                raise RuntimeError(f"aggregator stopped early; logs in {run_dir}")
            time.sleep(0.2)
    finally:
        for pr in procs:
            pr.terminate()
        for pr in procs:
            pr.wait(timeout=60)
        consumer.close()
    assert first is not None
    seconds = now - first[0]
    return {"processes": processes, "events": events, "seconds": round(seconds, 2),
            "events_per_s": round((events - first[1]) / seconds) if seconds else None,
            "startup_s": round(first[0] - start, 2), "peak_rss_mib": [p // 1024 for p in peaks]}


def state_bytes_per_open_cart() -> int:
    """Pickled size of a customer with an open 3-line cart and a full dedupe window."""
    state = None
    for i in range(40):
        item = str(i % 3 + 1)
        ev = new_cart_event(EventType.ITEM_ADDED, "customer-123456", item, 1)
        state = apply(state, ev, Product(item, f"Product {item}", Decimal("19.99"), 10**6),
                      EventPosition(ev.event_id, 3, 1_000_000 + i))
    return len(pickle.dumps(ResequenceState(next_seq=41, customer=state)))


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP",
                                                              "localhost:9092"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    t0 = time.monotonic()
    topics = preload(args.bootstrap, tag, args.events, args.customers)
    print(f"preloaded {args.events} events in {time.monotonic() - t0:.1f}s")
    runs = []
    for n in args.processes:
        # Each run gets fresh output topics so its count starts at zero.
        out = {**topics, "TOPIC_CART_DETAILS": f"bench-{tag}-details-{n}p",
               "TOPIC_DEAD_LETTER": f"bench-{tag}-dead-{n}p"}
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        for fut in admin.create_topics([NewTopic(out["TOPIC_CART_DETAILS"], 6, 1),
                                        NewTopic(out["TOPIC_DEAD_LETTER"], 1, 1)]).values():
            fut.result(timeout=30)
        runs.append(run_flow(args.bootstrap, out, args.events, n))
        print(json.dumps(runs[-1]))
    result = {"runs": runs, "state_bytes_per_open_cart": state_bytes_per_open_cart(),
              "targets": {"events_per_s_one_process": 40_000, "state_bytes_per_open_cart": 2048}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "aggregator.json").write_text(json.dumps(result, indent=2))
    print("| processes | events/s | peak RSS MiB |\n|---|---|---|")
    for r in runs:
        print(f"| {r['processes']} | {r['events_per_s']} | {r['peak_rss_mib']} |")
    print(f"state per open cart: {result['state_bytes_per_open_cart']} bytes (target <= 2048)")


if __name__ == "__main__":
    main()
