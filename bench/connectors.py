"""Sink throughput: N cart-details records from Kafka through the real sink code into each store.

    python bench/connectors.py [--records 200000] [--customers 50000] [--batch-max 5000]
                               [--instances 1 2]

Preloads a fresh 6-partition topic with N cart-details records (1-4 lines each, versions growing
per customer), then, for each sink (Redis, PostgreSQL) and each instance count, runs that many
sink processes in one consumer group (the production loop and sink code, as `make up` runs them)
from the start of the topic until every record is stored and committed, into fresh stores (a
new database; Redis keys under a new prefix). `seconds` runs from the first record received to
the last partition's end stored (the rate is records / seconds); `wall_s` also includes joining
the consumer group.
The best run is the sink's result; every run is listed. Cleans up the topic, the databases and
the keys. Writes bench/results/connectors.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import sys
import threading
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

from bench.cpu import tree_cpu_s  # noqa: E402
from cart_contract import CartDetails, EventPosition, LineItem, encode_cart_details  # noqa: E402
from connectors.config import Config  # noqa: E402
from connectors.consumer import DeadLetters, Stopper, run  # noqa: E402
from connectors.service import build_sink  # noqa: E402
from tests.support.connectors import end_offsets  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGETS = {"redis": 20_000, "postgres": 10_000}


def record(customer: str, version: int, rng: random.Random) -> CartDetails:
    """A realistic cart: 1-4 lines."""
    lines = []
    for i in range(rng.randint(1, 4)):
        price = Decimal(f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}")
        qty = rng.randint(1, 5)
        lines.append(LineItem(str(i + 1), f"Product {i + 1}", qty, price, price * qty))
    return CartDetails(customer, f"{customer}:1", "OPEN", tuple(lines),
                       sum(li.qty for li in lines),
                       sum((li.total_price for li in lines), Decimal(0)),
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
        value = encode_cart_details(record(c, versions[c], rng))
        while True:
            try:
                p.produce(topic, value, c.encode())
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0


def _instance(cfg: Config, name: str, ready: Any, stop: Any, out: Any) -> None:
    """One sink process: the production loop, reporting each stored batch to the parent."""
    sink = build_sink(name, cfg)
    prepare = sink.prepare

    def timed_prepare(batch: Any) -> Any:
        if sink.prepare is timed_prepare:  # report the first record's arrival once
            sink.prepare = prepare  # type: ignore[method-assign]
            out.put(("first", 0, time.monotonic()))
        return prepare(batch)

    sink.prepare = timed_prepare  # type: ignore[method-assign]
    stopper = Stopper()
    threading.Thread(target=lambda: (stop.wait(), stopper.stop()), daemon=True).start()
    ready.wait()
    run(bootstrap=cfg.kafka_bootstrap, topic=cfg.topic_of(name), group=cfg.group(name),
        store=sink, dead_letters=DeadLetters(cfg.kafka_bootstrap, cfg.topic_dead_letter, "bench"),
        stopper=stopper, batch_max=cfg.batch_max, batch_wait_s=cfg.batch_wait_s,
        on_batch=lambda done: out.put(("batch", done.records, done.stored_until)))
    out.put(("written", sink.written, {}))


def store_pid(cfg: Config, name: str) -> int | None:
    """The local store server's process (Redis; PostgreSQL's postmaster, whose children are the
    backends), whose CPU a run adds to the sinks'; None when it runs elsewhere."""
    try:
        if name == "redis":
            client = redis.Redis.from_url(cfg.redis_url)
            try:
                pid = int(client.info("server")["process_id"])
            finally:
                client.close()
        else:
            with psycopg.connect(cfg.database_url, autocommit=True) as conn:
                backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            stat = Path(f"/proc/{backend}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])  # the backend's parent: the postmaster
    except (OSError, redis.RedisError, psycopg.Error):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def drain(cfg: Config, name: str, instances: int) -> dict[str, Any]:
    """Run `instances` sink processes (one consumer group) until the whole topic is stored.

    Also the CPU the sink processes and the store server (when local) spent per record, from
    the processes' start to the last record stored: what bench/capacity.py plans with.
    """
    ends = {p: e for p, e in end_offsets(cfg.kafka_bootstrap, cfg.topic_of(name)).items() if e}
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Barrier(instances + 1), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_instance, args=(cfg, name, ready, stop, out))
             for _ in range(instances)]
    for proc in procs:
        proc.start()
    ready.wait(timeout=120)  # every process has imported everything
    store = store_pid(cfg, name)
    cpu0 = sum(tree_cpu_s(p.pid) for p in procs)
    store0 = tree_cpu_s(store) if store else 0.0
    start = time.monotonic()
    first = float("inf")
    stored: dict[int, int] = {}
    read = 0
    while any(stored.get(p, 0) < e for p, e in ends.items()):
        kind, n, data = out.get(timeout=300)
        if kind == "first":  # time.monotonic() is one clock for every process on Linux
            first = min(first, data)
            continue
        read += n
        for p, o in data.items():
            stored[p] = max(o, stored.get(p, 0))
    end = time.monotonic()
    cpu = sum(tree_cpu_s(p.pid) for p in procs) - cpu0
    store_cpu = tree_cpu_s(store) - store0 if store else None
    seconds = end - first
    stop.set()
    written, reports = 0, 0
    while reports < instances:
        kind, n, _ = out.get(timeout=60)
        if kind == "written":
            written, reports = written + n, reports + 1
    for proc in procs:
        proc.join(30)
    records = sum(ends.values())
    return {"instances": instances, "records": records, "seconds": round(seconds, 2),
            "wall_s": round(end - start, 2), "records_per_s": round(records / seconds),
            "records_read": read, "written": written,
            "sink_cpu_ms_per_record": round(cpu * 1000 / records, 4),
            "store_cpu_ms_per_record": None if store_cpu is None
            else round(store_cpu * 1000 / records, 4)}


def _fresh_store(cfg: Config, server_url: str, db: str, run: int) -> Config:
    """Another group, key prefix and database, so each run starts from empty stores."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    return cfg.replace(group_prefix=f"{cfg.group_prefix}-{run}",
                       key_prefix=f"{cfg.key_prefix}{run}:",
                       database_url=server_url.rsplit("/", 1)[0] + f"/{db}")


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--batch-max", type=int, default=Config().batch_max)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2],
                        help="sink processes per run, one run per value [1 2]")
    args = parser.parse_args()
    base = Config.from_env()
    tag = uuid.uuid4().hex[:8]
    cfg = base.replace(topic_cart_details=f"bench-{tag}-details",
                       topic_dead_letter=f"bench-{tag}-dead", group_prefix=f"bench-{tag}",
                       key_prefix=f"bench:{tag}:", updates_channel=f"bench:{tag}:updates",
                       batch_max=args.batch_max)
    admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap})
    admin.create_topics([NewTopic(cfg.topic_dead_letter, 1, 1)])
    client = redis.Redis.from_url(cfg.redis_url)
    dbs = [f"bench_{tag}_{i}" for i in range(len(args.instances))]
    results: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        preload(cfg.kafka_bootstrap, cfg.topic_cart_details, args.records, args.customers)
        print(f"preloaded {args.records} records in {time.monotonic() - t0:.1f}s")
        run_cfgs = [_fresh_store(cfg, base.database_url, db, i) for i, db in enumerate(dbs)]
        for name in TARGETS:
            runs = []
            for run_cfg, n in zip(run_cfgs, args.instances, strict=True):
                runs.append(drain(run_cfg, name, n))
                print(f"{name}: {runs[-1]}")
            best = max(runs, key=lambda r: r["records_per_s"])
            results[name] = {"records_per_s": best["records_per_s"],
                             "instances": best["instances"], "target": TARGETS[name],
                             # CPU per record is load-independent: the least of the runs.
                             "sink_cpu_ms_per_record": min(r["sink_cpu_ms_per_record"]
                                                           for r in runs),
                             "store_cpu_ms_per_record": min(
                                 (r["store_cpu_ms_per_record"] for r in runs
                                  if r["store_cpu_ms_per_record"] is not None), default=None),
                             "runs": runs}
    finally:
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            for db in dbs:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        for keys in _batched(client.scan_iter(match=f"{cfg.key_prefix}*", count=5000), 5000):
            client.unlink(*keys)
        admin.delete_topics([cfg.topic_cart_details, cfg.topic_dead_letter])
    results["setup"] = {"records": args.records, "customers": args.customers,
                        "batch_max": cfg.batch_max, "cpus": len(os.sched_getaffinity(0)),
                        "load_average": [round(x, 2) for x in os.getloadavg()],
                        "python": platform.python_version()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "connectors.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| sink | records/s | processes | target |\n|---|---|---|---|")
    for name in TARGETS:
        r = results[name]
        print(f"| {name} | {r['records_per_s']} | {r['instances']} | >= {r['target']} |")


def _batched(it: Any, n: int) -> Any:
    chunk: list[Any] = []
    for x in it:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


if __name__ == "__main__":
    main()
