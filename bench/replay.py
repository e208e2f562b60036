"""Rebuild from the log: N cart events through the aggregator and both sinks, timed end to end.

    python bench/replay.py [--events 1000000] [--customers 100000] [--products 1000]
                           [--agg-processes 2] [--timeout 900]

What `cartstream replay --from-events` followed by a restart does, on fresh topics so
the live system is untouched: preloads a catalog and N random cart events (the aggregator
bench's workload), then starts, at once, the aggregator (empty recovery state), the Redis sink
and the PostgreSQL sink (fresh database, own key prefix and consumer groups) as `make up` runs
them, and waits until both sinks have committed one cart-details record per event. The clock
runs from the start of the processes (imports and group joins included) to the last commit;
progress is printed every few seconds. Cleans up topics, database and keys.
Writes bench/results/replay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import redis
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.aggregator import (  # noqa: E402
    catalog,
    create_topics,
    free_port,
    preload,
    workload,
)
from connectors.config import Config as SinkConfig  # noqa: E402
from tests.support.connectors import committed, end_offsets  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGET_S = 90
SINKS = ("redis", "postgres")


def start(command: str, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    """`cartstream <command>`, as `make up` starts it, logging to log_dir/<command>.log."""
    log = (log_dir / f"{command.replace(' ', '-')}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "cartstream", *command.split()], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--agg-processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900, help="give up after this (s)")
    args = parser.parse_args()
    base = SinkConfig.from_env()
    bootstrap = base.kafka_bootstrap
    tag = uuid.uuid4().hex[:8]
    t0 = time.monotonic()
    inputs = preload(bootstrap, tag, workload(args.events, args.customers, args.products),
                     catalog(args.products))
    print(f"preloaded {args.events:,} events in {time.monotonic() - t0:.0f}s", flush=True)
    # Every topic the flow writes or reads is the bench's own: the reservation stage's request
    # log and reserved counts too (the defaults are the live system's topics).
    topics = {"TOPIC_CART_DETAILS": f"bench-{tag}-details",
              "TOPIC_DEAD_LETTER": f"bench-{tag}-dead",
              "TOPIC_CART_RESERVATIONS": f"bench-{tag}-reservations",
              "TOPIC_PRODUCT_RESERVATIONS": f"bench-{tag}-reserved"}
    create_topics(bootstrap, {topics["TOPIC_CART_DETAILS"]: 6, topics["TOPIC_DEAD_LETTER"]: 1,
                              topics["TOPIC_CART_RESERVATIONS"]: 1,
                              topics["TOPIC_PRODUCT_RESERVATIONS"]: 3})
    db = f"bench_replay_{tag}"
    with psycopg.connect(base.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    run_dir = Path(tempfile.mkdtemp(prefix="replay-bench-"))
    env = {**os.environ, **inputs, **topics, "RUN_DIR": str(run_dir),
           "DATABASE_URL": base.database_url.rsplit("/", 1)[0] + f"/{db}",
           "REDIS_KEY_PREFIX": f"bench-{tag}:", "CONSUMER_GROUP_PREFIX": f"bench-{tag}",
           "CART_UPDATES_CHANNEL": f"bench-{tag}:cart-updated",
           "AGG_PROCESSES": str(args.agg_processes), "AGG_METRICS_PORT": "0",
           "AGG_CLUSTER_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    groups = {s: f"bench-{tag}-{s}" for s in SINKS}
    details = topics["TOPIC_CART_DETAILS"]
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {}
    try:
        start_t = time.monotonic()
        procs = [start("aggregate", env, run_dir)] + [
            start(f"sink {s}", env, run_dir) for s in SINKS]
        aggregated_at: float | None = None
        done: dict[str, float] = {}
        last_print = 0.0
        while len(done) < len(SINKS):
            now = time.monotonic()
            if now - start_t > args.timeout:
                raise TimeoutError(f"not done after {args.timeout:.0f}s; logs in {run_dir}")
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args} exited ({p.returncode}); logs in {run_dir}")
            out = sum(end_offsets(bootstrap, details).values())
            if aggregated_at is None and out >= args.events:
                aggregated_at = now
            stored = {s: sum(max(o, 0) for o in committed(bootstrap, g, details).values())
                      for s, g in groups.items()}
            for s, n in stored.items():
                if n >= args.events and s not in done:
                    done[s] = now
            if now - last_print >= 5:
                last_print = now
                print(f"{now - start_t:5.0f}s  aggregated {out:>9,}  "
                      + "  ".join(f"{s} {n:>9,}" for s, n in stored.items())
                      + f"  of {args.events:,}", flush=True)
            time.sleep(1)
        end = max(done.values())
        seconds = end - start_t
        result = {
            "events": args.events, "customers": args.customers,
            "aggregator_processes": args.agg_processes,
            "seconds": round(seconds, 1), "events_per_s": round(args.events / seconds),
            "aggregator_done_s": round((aggregated_at or end) - start_t, 1),
            "sinks_done_s": {s: round(t - start_t, 1) for s, t in done.items()},
            "target_s": TARGET_S, "met": seconds < TARGET_S,
            "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        r = redis.Redis.from_url(base.redis_url)
        keys = list(r.scan_iter(match=f"bench-{tag}:*", count=10_000))
        for i in range(0, len(keys), 10_000):
            r.unlink(*keys[i:i + 10_000])
        AdminClient({"bootstrap.servers": bootstrap}).delete_topics(
            [*inputs.values(), *topics.values()])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
