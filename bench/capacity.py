"""The layout for a target load, on paper, from the per-core figures this machine measured.

    python -m bench.capacity --commands 50000 --reads 500000 --open-carts 10000000

Reads bench/results/latest.json (bench/report.py merges every benchmark's JSON into it): the
CPU each piece spent per operation (write API per acknowledged command, broker per record,
aggregator events per CPU-second, each sink and its store per record, read API and Redis per
read) and the bytes each cart takes in Redis, PostgreSQL and the Kafka log (bench/storage.py).
A figure missing there is taken from the fallback below, whose source is printed beside it.
Prints every quantity with its arithmetic and the assumptions (utilisation, replication,
growth); nothing here measures anything. The method and a worked example: docs/capacity.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LATEST = Path(__file__).resolve().parent / "results" / "latest.json"
DAY_S = 86_400
GB = 1e9
MB = 1e6

# Used only when latest.json lacks the figure; each says where it comes from.
FALLBACK: dict[str, tuple[float, str]] = {
    "api_cpu_ms": (0.36, "issue 18: ~0.36 ms of API CPU per acked add"),
    "broker_cpu_ms": (0.17, "docs/architecture.md: the broker adds 0.1-0.17 ms per add"),
    "fold_events_per_cpu_s": (21_676, "docs/architecture.md: aggregator, 1 process, 10% "
                                      "checkouts, events per CPU-second (lower of two runs)"),
    "state_bytes_per_open_cart": (2048, "bench/report.py target for the aggregator's state"),
    "redis_sink_cpu_ms": (0.05, "assumed: run bench/connectors.py"),
    "redis_store_cpu_ms": (0.02, "assumed: run bench/connectors.py"),
    "pg_sink_cpu_ms": (0.1, "assumed: run bench/connectors.py"),
    "pg_store_cpu_ms": (0.1, "assumed: run bench/connectors.py"),
    "read_cpu_ms": (0.17, "docs/architecture.md: a cached read, 0.15-0.17 ms"),
    "redis_cpu_ms_per_read": (0.01, "assumed: one unpipelined HMGET ~10 us of Redis"),
    "reserve_checkouts_per_s": (44_000, "docs/architecture.md: the reservation stage, "
                                        "three-line checkouts/s on one core"),
    "redis_bytes_per_cart": (1183, "bench/storage.py, 3 lines (used_memory growth per key)"),
    "pg_bytes_per_cart": (3138, "bench/storage.py, 3 lines (tables + indexes per cart)"),
    "details_bytes": (789, "bench/storage.py, 3 lines (cart-details JSON)"),
    "event_log_bytes": (211.6, "bench/storage.py (cart-events bytes on the broker's disk)"),
    "event_value_bytes": (184, "bench/storage.py (cart-events JSON)"),
}


@dataclass(frozen=True)
class Figures:
    """What one core did on this machine, and what one cart takes, with where each came from."""

    values: dict[str, float]
    sources: dict[str, str]

    def __getitem__(self, name: str) -> float:
        return self.values[name]


def _get(d: Any, *path: str) -> Any:
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def _scenario(write: dict[str, Any], name: str) -> dict[str, Any]:
    return next((r for r in write.get("results", []) if r.get("scenario") == name), {})


def figures(latest: dict[str, Any], lines: int = 3) -> Figures:
    """The planning figures from a latest.json document (fallbacks where it has none)."""
    write, agg, con = latest.get("write_api", {}), latest.get("aggregator", {}), \
        latest.get("connectors", {})
    add = _scenario(write, "add")
    one = _get(agg, "summary", "1_process") or {}
    cart = _get(latest, "read_api", "results", "cached_cart") or {}
    size = _get(latest, "storage", "by_lines", str(lines)) or {}
    kafka = _get(latest, "storage", "kafka") or {}
    redis_mem = [v for v in (_get(size, "redis", "used_memory_growth_per_key"),
                             _get(size, "redis", "memory_usage_bytes_median")) if v]
    measured: dict[str, tuple[Any, str]] = {
        "api_cpu_ms": (add.get("server_cpu_ms"), "write_api: add, server CPU per request"),
        "broker_cpu_ms": (add.get("broker_cpu_ms"), "write_api: add, broker CPU per request"),
        "fold_events_per_cpu_s": (one.get("sustained_events_per_cpu_s_median")
                                  or one.get("events_per_cpu_s_median"),
                                  "aggregator: 1 process, sustained events per CPU-second"),
        "state_bytes_per_open_cart": (agg.get("state_bytes_per_open_cart"),
                                      "aggregator: live RSS per open cart"),
        "redis_sink_cpu_ms": (_get(con, "redis", "sink_cpu_ms_per_record"),
                              "connectors: redis sink CPU per record"),
        "redis_store_cpu_ms": (_get(con, "redis", "store_cpu_ms_per_record"),
                               "connectors: Redis server CPU per record"),
        "pg_sink_cpu_ms": (_get(con, "postgres", "sink_cpu_ms_per_record"),
                           "connectors: postgres sink CPU per record"),
        "pg_store_cpu_ms": (_get(con, "postgres", "store_cpu_ms_per_record"),
                            "connectors: PostgreSQL CPU per record"),
        "read_cpu_ms": (cart.get("server_cpu_ms_per_request"),
                        "read_api: cached cart, server CPU per request"),
        "redis_cpu_ms_per_read": (cart.get("redis_cpu_ms_per_request"),
                                  "read_api: cached cart, Redis CPU per request"),
        "reserve_checkouts_per_s": (None, ""),  # no benchmark writes it yet
        "redis_bytes_per_cart": (max(redis_mem) if redis_mem else None,
                                 f"storage: {lines}-line cart, Redis bytes per key"),
        "pg_bytes_per_cart": (_get(size, "postgres", "total_bytes_per_cart"),
                              f"storage: {lines}-line cart, PostgreSQL bytes (3 tables)"),
        "details_bytes": (size.get("cart_details_bytes_median"),
                          f"storage: {lines}-line cart-details record"),
        "event_log_bytes": (kafka.get("log_bytes_per_event"),
                            "storage: cart-events bytes in the log segment"),
        "event_value_bytes": (kafka.get("event_value_bytes_median"),
                              "storage: cart-events record value"),
    }
    values, sources = {}, {}
    for name, (value, source) in measured.items():
        if isinstance(value, int | float) and value > 0:
            values[name], sources[name] = float(value), f"measured ({source})"
        else:
            values[name], sources[name] = FALLBACK[name][0], FALLBACK[name][1]
    return Figures(values, sources)


@dataclass(frozen=True)
class Target:
    """The load to plan for, and the assumptions the plan names."""

    commands_per_s: float = 50_000
    reads_per_s: float = 500_000
    open_carts: float = 10_000_000
    # Redis and the compacted topic keep one cart per customer ever seen (the last order stays).
    customers: float | None = None
    utilisation: float = 0.6  # plan every core at most this busy: peaks, failover, GC, rebalance
    replication: int = 3  # copies of every partition (min.insync.replicas = 2)
    checkout_share: float = 0.1  # share of commands that are checkouts (new order rows)
    idempotency_share: float = 0.0  # share of commands sent with an Idempotency-Key
    idempotency_ttl_s: float = 86_400  # WRITE_IDEMPOTENCY_TTL_S
    idempotency_bytes: float = 400  # one record in Redis (key, fingerprint, answer): assumed
    partition_mb_s: float = 10.0  # what one partition's leader is planned to take: assumed
    broker_mb_s: float = 200.0  # disk or network a broker is planned to move: assumed
    host_cores: int = 16  # cores of one broker host
    redis_shard_gb: float = 25.0  # memory planned per Redis primary: assumed
    fragmentation: float = 1.3  # allocator overhead on top of the measured bytes: assumed
    growth: float = 4.0  # partitions for this many times the target (re-keying is a migration)
    lines: int = 3  # lines of a typical cart (bench/storage.py measures 1, 3 and 10)

    @property
    def carts(self) -> float:
        return self.customers if self.customers is not None else self.open_carts


@dataclass
class Plan:
    """Sections of (quantity, value, arithmetic) lines, and the limits found."""

    sections: list[tuple[str, list[tuple[str, float, str]]]] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)

    def section(self, title: str) -> list[tuple[str, float, str]]:
        rows: list[tuple[str, float, str]] = []
        self.sections.append((title, rows))
        return rows


def n(x: float) -> str:
    """A number for the arithmetic lines: thousands separated, at most 3 significant decimals."""
    if abs(x) >= 100 or x == int(x):
        return f"{x:,.0f}"
    return f"{x:,.3g}"


def plan(f: Figures, t: Target) -> Plan:
    """The layout for `t` from `f`, every number with its arithmetic."""
    p = Plan()
    u, c, r, rf = t.utilisation, t.commands_per_s, t.reads_per_s, t.replication

    def put(rows: list[tuple[str, float, str]], key: str, label: str, value: float,
            how: str) -> float:
        p.values[key] = value
        rows.append((label, value, how))
        return value

    # ---- write API: one granian worker process is one core (the GIL)
    w = p.section("Write API")
    api_cores = put(w, "api_cores", "cores", c * f["api_cpu_ms"] / 1000 / u,
                    f"{n(c)} cmd/s x {f['api_cpu_ms']} ms / 1000 / {u} utilisation")
    put(w, "api_processes", "worker processes (1 core each)", math.ceil(api_cores),
        f"ceil({n(api_cores)})")

    # ---- aggregator: one Bytewax process folds on one core
    a = p.section("Aggregator (Bytewax)")
    per_process = f["fold_events_per_cpu_s"] * u
    procs = put(a, "aggregator_processes", "processes (1 core each)",
                math.ceil(c / per_process),
                f"ceil({n(c)} events/s / ({n(f['fold_events_per_cpu_s'])} events per "
                f"CPU-s x {u}))")
    state = put(a, "aggregator_state_gb", "state in memory, GB (all processes)",
                t.open_carts * f["state_bytes_per_open_cart"] / GB,
                f"{n(t.open_carts)} open carts x {n(f['state_bytes_per_open_cart'])} B")
    put(a, "aggregator_state_gb_per_process", "state per process, GB", state / procs,
        f"{n(state)} / {n(procs)}")

    # ---- partitions of cart-events (and cart-details-event)
    k = p.section("Partitions (cart-events, cart-details-event)")
    by_procs = procs * t.growth
    event_mb_s = c * f["event_log_bytes"] / MB
    by_bytes = event_mb_s * t.growth / t.partition_mb_s
    parts = put(k, "partitions", "partitions (multiple of 12)",
                12 * math.ceil(max(by_procs, by_bytes, 12) / 12),
                f"max({n(procs)} processes x {n(t.growth)} growth, {n(event_mb_s)} MB/s x "
                f"{n(t.growth)} / {n(t.partition_mb_s)} MB/s per partition), rounded up to 12")
    put(k, "events_per_partition_s", "events/s per partition at the target", c / parts,
        f"{n(c)} / {n(parts)}")

    # ---- Kafka brokers
    b = p.section("Kafka brokers")
    details_log = f["details_bytes"] + (f["event_log_bytes"] - f["event_value_bytes"])
    produced = put(b, "produced_mb_s", "bytes produced, MB/s",
                   c * (f["event_log_bytes"] + details_log) / MB,
                   f"{n(c)}/s x ({n(f['event_log_bytes'])} B event + {n(details_log)} B "
                   f"cart-details record)")
    written = put(b, "disk_write_mb_s", "disk writes, MB/s (all replicas)", produced * rf,
                  f"{n(produced)} x {rf} replicas")
    fetched = put(b, "network_out_mb_s", "network out, MB/s",
                  produced * (rf - 1) + c * (f["event_log_bytes"] + 2 * details_log) / MB,
                  f"{n(produced)} x {rf - 1} follower fetches + aggregator reads events + "
                  "2 sinks read cart-details")
    # Each API process has its own producer: its batch for a partition holds what it gets in
    # one linger window. The broker figure was measured at such batches (~1 record each).
    api_procs = p.values["api_processes"]
    put(b, "records_per_batch", "records per producer batch at the target (linger 5 ms)",
        c / (api_procs * parts) * 0.005,
        f"{n(c)}/s / ({n(api_procs)} producers x {n(parts)} partitions) x 0.005 s")
    broker_cores = put(b, "broker_cores", "broker cores",
                       2 * c * rf * f["broker_cpu_ms"] / 1000 / u,
                       f"2 records per command x {n(c)}/s x {rf} copies x "
                       f"{f['broker_cpu_ms']} ms / 1000 / {u}")
    by_io = max(written, fetched) / (t.broker_mb_s * u)
    by_cpu = broker_cores / t.host_cores
    put(b, "brokers", "brokers", max(rf, math.ceil(by_io), math.ceil(by_cpu)),
        f"max({rf} replicas, ceil({n(max(written, fetched))} MB/s / ({n(t.broker_mb_s)} x {u}))"
        f", ceil({n(broker_cores)} cores / {t.host_cores} per host))")
    events_day = put(b, "cart_events_gb_per_day", "cart-events disk per day of retention, GB "
                     "(all replicas; kept forever)",
                     c * f["event_log_bytes"] * DAY_S * rf / GB,
                     f"{n(c)}/s x {n(f['event_log_bytes'])} B x 86,400 s x {rf}")
    put(b, "cart_events_tb_per_year", "cart-events per year at the peak rate, TB",
        events_day * 365 / 1000, f"{n(events_day)} GB x 365")
    put(b, "details_compacted_gb", "cart-details-event after compaction, GB (all replicas, "
        "up to 2x before the cleaner runs)", t.carts * details_log * rf / GB,
        f"{n(t.carts)} customers x {n(details_log)} B x {rf}")

    # ---- sinks and stores
    s = p.section("Sinks and stores")
    put(s, "redis_sink_processes", "redis sink processes",
        math.ceil(c * f["redis_sink_cpu_ms"] / 1000 / u),
        f"ceil({n(c)} records/s x {f['redis_sink_cpu_ms']} ms / 1000 / {u})")
    put(s, "postgres_sink_processes", "postgres sink processes",
        math.ceil(c * f["pg_sink_cpu_ms"] / 1000 / u),
        f"ceil({n(c)} records/s x {f['pg_sink_cpu_ms']} ms / 1000 / {u})")
    redis_write = c * f["redis_store_cpu_ms"] / 1000
    redis_read = r * f["redis_cpu_ms_per_read"] / 1000
    redis_cores = put(s, "redis_cores", "Redis cores (writes + reads)",
                      (redis_write + redis_read) / u,
                      f"({n(c)} x {f['redis_store_cpu_ms']} ms + {n(r)} reads x "
                      f"{f['redis_cpu_ms_per_read']} ms) / 1000 / {u}")
    carts_gb = t.carts * f["redis_bytes_per_cart"] * t.fragmentation / GB
    idem_gb = c * t.idempotency_share * t.idempotency_ttl_s * t.idempotency_bytes / GB
    redis_gb = put(s, "redis_gb", "Redis memory, GB (one copy)", carts_gb + idem_gb,
                   f"{n(t.carts)} carts x {n(f['redis_bytes_per_cart'])} B x "
                   f"{t.fragmentation} + idempotency {n(c)} x {t.idempotency_share} x "
                   f"{n(t.idempotency_ttl_s)} s x {n(t.idempotency_bytes)} B")
    # One Redis process runs commands on one core: a shard per core and per shard's memory.
    put(s, "redis_shards", "Redis primaries (1 core each)",
        max(1, math.ceil(redis_cores), math.ceil(redis_gb / t.redis_shard_gb)),
        f"max(ceil({n(redis_cores)} cores), ceil({n(redis_gb)} GB / {n(t.redis_shard_gb)} GB))")
    put(s, "postgres_cores", "PostgreSQL cores (sink writes)", c * f["pg_store_cpu_ms"] / 1000 / u,
        f"{n(c)} records/s x {f['pg_store_cpu_ms']} ms / 1000 / {u}")
    lines_per_cart = t.lines
    put(s, "postgres_row_writes_s", "PostgreSQL row writes/s (upper bound, no coalescing)",
        c * (2 + 2 * lines_per_cart),
        f"{n(c)} x (customers + carts + {lines_per_cart} lines deleted + "
        f"{lines_per_cart} inserted)")
    orders_day = c * t.checkout_share * DAY_S
    put(s, "postgres_rows", "PostgreSQL rows now (customers + carts + lines)",
        t.carts + t.open_carts * (1 + lines_per_cart),
        f"{n(t.carts)} customers + {n(t.open_carts)} carts x (1 + {lines_per_cart} lines)")
    put(s, "postgres_gb", "PostgreSQL size now, GB", t.open_carts * f["pg_bytes_per_cart"] / GB,
        f"{n(t.open_carts)} x {n(f['pg_bytes_per_cart'])} B (customers, carts, lines, indexes)")
    put(s, "postgres_gb_per_day", "PostgreSQL growth per day at the peak rate, GB (orders)",
        orders_day * f["pg_bytes_per_cart"] / GB,
        f"{n(c)} x {t.checkout_share} checkouts x 86,400 s x {n(f['pg_bytes_per_cart'])} B")

    # ---- read API
    q = p.section("Read API")
    read_cores = put(q, "read_cores", "cores", r * f["read_cpu_ms"] / 1000 / u,
                     f"{n(r)} reads/s x {f['read_cpu_ms']} ms / 1000 / {u}")
    put(q, "read_processes", "worker processes (1 core each)", math.ceil(read_cores),
        f"ceil({n(read_cores)})")

    # ---- all of it
    v = p.values
    total = p.section("Total")
    put(total, "total_cores", "cores planned (API, aggregator, sinks, read API, Redis, "
        "PostgreSQL, brokers)",
        v["api_processes"] + v["aggregator_processes"] + v["redis_sink_processes"]
        + v["postgres_sink_processes"] + v["read_processes"] + v["redis_shards"]
        + math.ceil(v["postgres_cores"]) + math.ceil(v["broker_cores"]),
        f"{n(v['api_processes'])} + {n(v['aggregator_processes'])} + "
        f"{n(v['redis_sink_processes'])} + {n(v['postgres_sink_processes'])} + "
        f"{n(v['read_processes'])} + {n(v['redis_shards'])} + "
        f"{math.ceil(v['postgres_cores'])} + {math.ceil(v['broker_cores'])}")

    # ---- where the design stops scaling
    one_key = f["fold_events_per_cpu_s"]
    p.limits += [
        f"Hot customer key: a customer's events are folded in order by one process, so one "
        f"customer (and one partition) can never take more than ~{n(one_key)} events/s (one "
        f"core); at the target a partition carries {n(c / parts)}/s. A key hotter than that "
        "(a bot, a shared cart) needs rate limiting at the API (RATE_LIMIT_COMMANDS), not more "
        "partitions.",
        f"One partition's throughput: {n(parts)} partitions cap the aggregator at "
        f"{n(parts * one_key * u)} events/s ({n(parts)} x {n(one_key)} x {u}). Growing "
        "cart-events moves customers to other partitions (murmur2(customerId) mod N): it needs "
        "writes paused and the aggregator caught up (docs/operations.md, \"Adding "
        "partitions\"), and a later replay from the start reads a customer's older and newer "
        "events from two partitions in no fixed order. Hence the growth factor: past it, a new "
        "cart-events topic with more partitions, the old one copied into it in order, and the "
        "read models rebuilt (`cartstream replay --from-events`).",
        f"Stock reservation: cart-reservations has one partition decided on one core, "
        f"~{n(f['reserve_checkouts_per_s'])} checkouts/s; the target asks "
        f"{n(c * t.checkout_share)}/s ({n(c)} x {t.checkout_share}). Past it: reservations "
        "partitioned by product with a confirm/release round (docs/architecture.md).",
        f"Redis memory: {n(redis_gb)} GB, i.e. {math.ceil(redis_gb / t.redis_shard_gb)} "
        f"primary(ies) of {n(t.redis_shard_gb)} GB by memory alone; Redis holds one key per "
        "customer ever seen (the last order stays), so it grows with customers, not open "
        "carts. Past one primary: Redis Cluster, which needs the redis sink's batch script "
        "(one EVAL over up to 500 keys) split per hash slot, and idle customers' keys "
        "expired (the read API falls back to PostgreSQL and re-warms).",
        f"Redis CPU: {n(redis_cores)} cores of commands at the target; one primary runs its "
        "commands on one core, so reads need read replicas (the read API reading replicas), "
        "io-threads (the socket work of unpipelined reads moves off the main thread) or more "
        "primaries.",
        f"The compacted topic: cart-details-event keeps one record per customer ever "
        f"(~{n(t.carts * details_log * rf / GB)} GB with replicas for {n(t.carts)} customers, "
        "twice that before the cleaner); rebuilding a store reads all of it. Past that: "
        "tombstones for customers idle past a retention, or a store snapshot.",
        f"The event store: cart-events is kept forever (retention.ms=-1), "
        f"{n(events_day)} GB/day with replicas at the peak rate; a full replay folds every "
        "event again at the aggregator's rate. Past a few months: tiered storage for the "
        "topic, and replays that start from the aggregator's recovery snapshot.",
        f"Broker CPU per record: every API process produces its own batches, so at "
        f"{n(p.values['records_per_batch'])} records per batch the broker pays per request "
        "and per batch for nearly every record. Past that: fewer, fuller producers (a longer "
        "WRITE_LINGER_MS, or fewer and bigger API processes per host), which trade latency "
        "for broker CPU.",
    ]
    if t.idempotency_share > 0:
        p.limits.append(
            f"Idempotency records: {n(c * t.idempotency_share * t.idempotency_ttl_s)} keys "
            f"live at once ({n(idem_gb)} GB); shorten WRITE_IDEMPOTENCY_TTL_S to what clients "
            "retry within.")
    return p


def render(f: Figures, t: Target, p: Plan) -> str:
    """The plan as text: figures with sources, assumptions, sections, limits."""
    out = ["Target: " + ", ".join(f"{k} {n(v)}" for k, v in (
        ("commands/s", t.commands_per_s), ("reads/s", t.reads_per_s),
        ("open carts", t.open_carts), ("customers", t.carts))), "", "Figures:"]
    out += [f"  {k} = {n(v)}  [{f.sources[k]}]" for k, v in f.values.items()]
    out += ["", "Assumptions: " + ", ".join(
        f"{k}={v}" for k, v in vars(t).items() if k not in ("commands_per_s", "reads_per_s",
                                                           "open_carts", "customers"))]
    out += ["  (utilisation: the share of each core planned busy; replication: copies of each "
            "partition; the *_mb_s, *_gb, *_bytes and fragmentation values are assumed, not "
            "measured here)"]
    for title, rows in p.sections:
        out += ["", title]
        out += [f"  {label}: {n(value)}    = {how}" for label, value, how in rows]
    out += ["", "Where it stops scaling"]
    out += [f"  - {line}" for line in p.limits]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print the plan for the target on the command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=LATEST, help="bench/results/latest.json")
    ap.add_argument("--commands", type=float, default=50_000, help="peak commands/s")
    ap.add_argument("--reads", type=float, default=500_000, help="peak reads/s")
    ap.add_argument("--open-carts", type=float, default=10_000_000)
    ap.add_argument("--customers", type=float, help="customers ever seen (default: open carts)")
    ap.add_argument("--lines", type=int, default=3, help="lines of a typical cart (1, 3, 10)")
    ap.add_argument("--utilisation", type=float, default=Target.utilisation)
    ap.add_argument("--replication", type=int, default=Target.replication)
    ap.add_argument("--checkout-share", type=float, default=Target.checkout_share)
    ap.add_argument("--idempotency-share", type=float, default=Target.idempotency_share)
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    a = ap.parse_args(argv)
    latest = json.loads(a.results.read_text()) if a.results.exists() else {}
    if not latest:
        print(f"{a.results} not found: every figure is a fallback", file=sys.stderr)
    f = figures(latest, a.lines)
    t = Target(commands_per_s=a.commands, reads_per_s=a.reads, open_carts=a.open_carts,
               customers=a.customers, utilisation=a.utilisation, replication=a.replication,
               checkout_share=a.checkout_share, idempotency_share=a.idempotency_share,
               lines=a.lines)
    p = plan(f, t)
    print(json.dumps(p.values, indent=2) if a.json else render(f, t, p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
