"""Rebuild from the log: N cart events through the aggregator and both sinks, three ways, timed.

    python bench/replay.py [--events 1000000] [--customers 100000] [--products 1000]
                           [--agg-processes 1] [--rounds 1] [--modes live,details,events]
                           [--replay-agg "" "AGG_GC_THRESHOLD=100000"] [--timeout 900]

On fresh topics, so the live system is untouched: preloads a catalog and N random cart events
(the aggregator bench's workload), then measures, in this order, each round:

- `live` (today's figure, what the issue measured): starts at once the aggregator (empty
  recovery state), the Redis sink and the PostgreSQL sink as `make up` runs them, and waits until
  both sinks have committed one cart-details record per event. The clock runs from the start of
  the processes (imports and group joins included) to the last commit.
- `details` (`make replay`): `cartstream replay --from details --sinks redis,postgres` over the
  cart-details topic the live run wrote, into empty stores (a new database, a new key prefix).
- `events` (`make replay FROM=events`): `cartstream replay --from events --sinks
  redis,postgres`: a fresh aggregator re-folds the events into a new cart-details topic, the
  sinks store them into empty stores; the command returns when everything is stored.

Each replay is timed from the command's start to its return. Every run gets its own database,
key prefix, consumer groups and (events) recovery directory and cart-details topic; the
reservation topics are the live run's (a replay from events re-reads its request log). `cpu_s`
is the CPU of the measured processes (the aggregator's included; not the servers').
The stores of each run are checked against the first run's (same customers and versions in
Redis and PostgreSQL, same cart rows and versions, same number of lines).
`--replay-batch-max 5000,50000` runs each replay once per value, alternately (an A/B in one
session); `--replay-agg` does the same for groups of aggregator settings of `--from events`
(space-separated NAME=VALUE; "" = the replay's own defaults, connectors/replay.py; e.g.
"AGG_SOURCE_BATCH_SIZE=10000 AGG_GC_THRESHOLD=100000" is how the live aggregator runs).
`--agg-processes` defaults to 1, as `make up` and `make replay` run it: on 2 cores a second
process costs 40-60% more aggregator CPU (bench/aggregator.py, docs/architecture.md).
Cleans up topics, databases and keys. Writes bench/results/replay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    preload,
    workload,
)
from connectors.config import Config as SinkConfig  # noqa: E402
from tests.support.connectors import committed, create_topics, end_offsets  # noqa: E402
from tests.support.ports import free_port_block  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGET_S = 90
SINKS = ("redis", "postgres")
MODES = ("live", "details", "events")


def start(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`cartstream ARGS`, as `make up` starts it, logging to log_path."""
    log = log_path.open("wb")
    return subprocess.Popen([sys.executable, "-m", "cartstream", *args], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def children_cpu() -> float:
    """CPU seconds of the children waited for so far (theirs included)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Run:
    """The private stores and names of one measured run."""

    def __init__(self, base: SinkConfig, tag: str, mode: str, shared: dict[str, str],
                 run_dir: Path) -> None:
        self.base, self.mode = base, mode
        self.tag = f"{tag}-{mode}-{uuid.uuid4().hex[:4]}"
        self.db = f"bench_replay_{self.tag.replace('-', '_')}"
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.database_url = base.database_url.rsplit("/", 1)[0] + f"/{self.db}"
        self.prefix = f"bench-{self.tag}:"
        self.run_dir = run_dir / self.tag
        self.run_dir.mkdir(parents=True)
        self.env = {**os.environ, **shared, "RUN_DIR": str(self.run_dir),
                    "DATABASE_URL": self.database_url, "REDIS_KEY_PREFIX": self.prefix,
                    "CONSUMER_GROUP_PREFIX": f"bench-{self.tag}",
                    "CART_UPDATES_CHANNEL": f"bench-{self.tag}:cart-updated",
                    "PYTHONUNBUFFERED": "1"}

    def stores(self) -> dict[str, Any]:
        """customerId -> version in Redis and in PostgreSQL, and the cart rows' versions."""
        r = redis.Redis.from_url(self.base.redis_url)
        in_redis = {}
        for key in r.scan_iter(match=f"{self.prefix}cart:*", count=10_000):
            in_redis[key.decode().rsplit(":", 1)[1]] = int(r.hget(key, "v"))
        with psycopg.connect(self.database_url) as conn:
            customers = dict(conn.execute("SELECT customer_id, version FROM customers"))
            carts = dict(conn.execute("SELECT cart_id, version FROM carts"))
            lines = conn.execute("SELECT count(*) FROM cart_lines").fetchone()[0]
        return {"redis": in_redis, "customers": customers, "carts": carts, "lines": lines}

    def clean(self) -> None:
        """Drop the database and the keys."""
        with psycopg.connect(self.base.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        r = redis.Redis.from_url(self.base.redis_url)
        keys = list(r.scan_iter(match=f"{self.prefix}*", count=10_000))
        for i in range(0, len(keys), 10_000):
            r.unlink(*keys[i:i + 10_000])


def run_live(run: Run, events: int, bootstrap: str, timeout: float) -> dict[str, Any]:
    """Aggregator and both sinks as processes, until both sinks committed `events` records."""
    details = run.env["TOPIC_CART_DETAILS"]
    groups = {s: f"bench-{run.tag}-{s}" for s in SINKS}
    cpu0 = children_cpu()
    start_t = time.monotonic()
    procs = [start(["aggregate"], run.env, run.run_dir / "aggregate.log")] + [
        start(["sink", s], run.env, run.run_dir / f"sink-{s}.log") for s in SINKS]
    aggregated_at: float | None = None
    done: dict[str, float] = {}
    last_print = 0.0
    try:
        while len(done) < len(SINKS):
            now = time.monotonic()
            if now - start_t > timeout:
                raise TimeoutError(f"not done after {timeout:.0f}s; logs in {run.run_dir}")
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args} exited ({p.returncode}); logs in "
                                       f"{run.run_dir}")
            out = sum(end_offsets(bootstrap, details).values())
            if aggregated_at is None and out >= events:
                aggregated_at = now
            stored = {s: sum(max(o, 0) for o in committed(bootstrap, g, details).values())
                      for s, g in groups.items()}
            for s, n in stored.items():
                if n >= events and s not in done:
                    done[s] = now
            if now - last_print >= 5:
                last_print = now
                print(f"  live {now - start_t:5.0f}s  aggregated {out:>9,}  "
                      + "  ".join(f"{s} {n:>9,}" for s, n in stored.items())
                      + f"  of {events:,}", flush=True)
            time.sleep(1)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    end = max(done.values())
    return {"seconds": round(end - start_t, 1),
            "aggregator_done_s": round((aggregated_at or end) - start_t, 1),
            "sinks_done_s": {s: round(t - start_t, 1) for s, t in done.items()},
            "cpu_s": round(children_cpu() - cpu0, 1)}


def run_replay(run: Run, source: str, timeout: float) -> dict[str, Any]:
    """`cartstream replay --from SOURCE --sinks redis,postgres` until it returns."""
    cpu0 = children_cpu()
    start_t = time.monotonic()
    log_path = run.run_dir / f"replay-{source}.log"
    proc = start(["replay", "--from", source, "--sinks", ",".join(SINKS)], run.env, log_path)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise TimeoutError(f"replay --from {source} not done after {timeout:.0f}s; "
                           f"log {log_path}") from None
    seconds = time.monotonic() - start_t
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"replay --from {source} exited {proc.returncode}:\n{text[-3000:]}")
    summary = text[text.rfind("replay summary:"):].strip().splitlines()
    print("  " + "\n  ".join(summary), flush=True)
    return {"seconds": round(seconds, 1), "cpu_s": round(children_cpu() - cpu0, 1),
            "summary": summary[1:]}


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--agg-processes", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="measure every mode this often")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="which of live,details,events (details needs live: it replays "
                             "what the live run wrote)")
    parser.add_argument("--replay-batch-max", default="",
                        help="REPLAY_BATCH_MAX values to compare, e.g. 5000,50000: each replay "
                             "runs once per value, alternately (default: the setting's)")
    parser.add_argument("--replay-agg", nargs="+", default=[""], metavar="SETTINGS",
                        help="aggregator settings of replays from events to compare, each a "
                             "group of space-separated NAME=VALUE (\"\": the replay's defaults), "
                             "alternately")
    parser.add_argument("--timeout", type=float, default=900, help="give up after this (s)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    batch_maxes = [b.strip() for b in args.replay_batch_max.split(",") if b.strip()] or [""]
    if "details" in modes and "live" not in modes:
        parser.error("the details replay reads what the live run wrote: add live to --modes")
    base = SinkConfig.from_env()
    bootstrap = base.kafka_bootstrap
    tag = uuid.uuid4().hex[:8]
    t0 = time.monotonic()
    inputs = preload(bootstrap, tag, workload(args.events, args.customers, args.products),
                     catalog(args.products))
    print(f"preloaded {args.events:,} events in {time.monotonic() - t0:.0f}s", flush=True)
    # Every topic the flow writes or reads is the bench's own: the reservation stage's request
    # log and reserved counts too (the defaults are the live system's topics).
    shared = {**inputs, "TOPIC_DEAD_LETTER": f"bench-{tag}-dead",
              "TOPIC_CART_RESERVATIONS": f"bench-{tag}-reservations",
              "TOPIC_PRODUCT_RESERVATIONS": f"bench-{tag}-reserved",
              "AGG_PROCESSES": str(args.agg_processes), "AGG_METRICS_PORT": "0"}
    topics = [shared["TOPIC_DEAD_LETTER"], shared["TOPIC_CART_RESERVATIONS"],
              shared["TOPIC_PRODUCT_RESERVATIONS"]]
    create_topics(bootstrap, {topics[0]: 1, topics[1]: 1, topics[2]: 3})
    run_dir = Path(tempfile.mkdtemp(prefix="replay-bench-"))
    runs: list[dict[str, Any]] = []
    live_details = f"bench-{tag}-details-live"
    reference: dict[str, Any] | None = None
    try:
        for rnd in range(args.rounds):
            plan = [(m, b, a) for m in MODES if m in modes
                    for b in (batch_maxes if m != "live" else [""])
                    for a in (args.replay_agg if m == "events" else [""])]
            for mode, batch_max, agg in plan:
                # The details replay reads what the first live run wrote.
                details = (live_details if mode == "details" or reference is None
                           else f"bench-{tag}-details-{mode}-{rnd}-{batch_max or 'd'}-"
                                f"{args.replay_agg.index(agg) if mode == 'events' else 0}")
                if details not in topics:
                    create_topics(bootstrap, {details: 6})
                    topics.append(details)
                extra = {"REPLAY_BATCH_MAX": batch_max} if batch_max else {}
                extra.update(kv.split("=", 1) for kv in agg.split())
                run = Run(base, tag, mode, {**shared, "TOPIC_CART_DETAILS": details,
                                            "AGG_CLUSTER_PORT": str(free_port_block(
                                                args.agg_processes)), **extra},
                          run_dir)
                print(f"round {rnd + 1}: {mode} {extra}", flush=True)
                try:
                    if mode == "live":
                        result = run_live(run, args.events, bootstrap, args.timeout)
                    else:
                        result = run_replay(run, mode, args.timeout)
                    stores = run.stores()
                finally:
                    run.clean()
                if reference is None:
                    reference = stores
                same = stores == reference
                result.update(mode=mode, round=rnd + 1, same_stores_as_first=same, settings=extra,
                              replay_batch_max=int(batch_max) if batch_max else None,
                              events_per_s=round(args.events / result["seconds"]),
                              customers_stored=len(stores["customers"]),
                              cart_rows=len(stores["carts"]),
                              load_average=[round(x, 2) for x in os.getloadavg()])
                print(f"  {mode}: {result['seconds']}s ({result['events_per_s']:,} events/s), "
                      f"cpu {result['cpu_s']}s, same stores as the first run: {same}", flush=True)
                runs.append(result)
    finally:
        # Wait for the deletions: a request still queued when the process exits is never sent
        # (and the client must outlive its futures).
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics([*inputs.values(), *topics]).values():
            future.result(timeout=60)
    best = {m: min((r for r in runs if r["mode"] == m), key=lambda r: r["seconds"])
            for m in MODES if any(r["mode"] == m for r in runs)}
    result = {"events": args.events, "customers": args.customers,
              "aggregator_processes": args.agg_processes, "target_s": TARGET_S,
              "best_s": {m: r["seconds"] for m, r in best.items()},
              "met": "events" in best and best["events"]["seconds"] < TARGET_S,
              "cpus": os.cpu_count(), "runs": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))


if __name__ == "__main__":
    main()
