"""Aggregator throughput on real Kafka, the BASELINE commit's beside this tree's; state size.

    python bench/aggregator.py [--events 200000] [--customers 20000] [--products 1000]
                               [--processes 1 2] [--repeat 1] [--bootstrap localhost:9092]
                               [--baseline 64bc8fb]
    python bench/aggregator.py --callgrind [--events 20000]   # instructions per event (fold)
    python bench/aggregator.py --variants "" "AGG_GC_THRESHOLD=0" [--processes 1] [--repeat 3]
                               [--events 1000000 --customers 100000]   # settings, this tree

1. Checks out the baseline commit in a temporary git worktree (.run/, removed at the end), so
   "today's" aggregator runs beside this one on the same machine, in the same run.
2. Preloads fresh topics with a catalog and N random cart events (adds, removes, clears and
   checkouts over `customers` customers).
3. For each process count, runs the aggregator of each tree in turn (`cartstream aggregate`;
   the baseline tree's `python -m cart_aggregator`) (recovery on,
   default snapshot interval) from the start of the topics into fresh output topics, and reports
   the sustained rate (first output record to last), events per CPU-second, the time to first
   output, and each process's peak RSS (VmHWM). A run must produce exactly one record per event
   and no dead letters.
4. The plain-loop ceiling of each tree: parse + fold of the same events in a Python loop (the
   flow's own parse and fold functions; no bytewax, no Kafka), and this tree's flow/ceiling
   ratio.
5. State per open cart, each tree: the RSS a live in-memory flow needs per extra customer with an
   open 3-line cart (two runs with C and 2C customers); this tree's pickled snapshot size.

--variants runs only this tree, once per group of settings (space-separated NAME=VALUE, "" for
the defaults), alternately, --repeat rounds, over one preloaded input: CPU µs per event (whole
run and sustained) per variant, median, and its ratio to the first variant. The replay's
aggregator settings (connectors/replay.py) were chosen with it. Writes
bench/results/aggregator_variants.json.

--callgrind runs the fold loop (apply + encode, no parse) of each tree under valgrind's
callgrind with one and with two passes over the events: the difference, divided by the events,
is the instruction count per event, free of start-up and setup.

Writes bench/results/aggregator.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cart_aggregator.flow import FoldLogic  # noqa: E402
from cart_aggregator.join import product_tuple  # noqa: E402
from cart_contract import (  # noqa: E402
    CartEvent,
    EventType,
    Product,
    encode_cart_event,
    encode_product,
    new_cart_event,
)
from tests.support.connectors import create_topics  # noqa: E402
from tests.support.ports import free_port_block  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BASELINE = "64bc8fb"  # today's aggregator, before the fold went to log order
KINDS = [EventType.ITEM_ADDED] * 6 + [EventType.ITEM_REMOVED] * 2 + [EventType.CHECKOUT,
                                                                      EventType.CART_CLEARED]


def catalog(products: int) -> dict[str, Product]:
    """A catalog of `products` products with plenty of stock."""
    rng = random.Random(7)
    return {str(i): Product(str(i), f"Product {i}", Decimal(rng.randint(100, 999_999)) / 100,
                            100_000) for i in range(1, products + 1)}


def workload(events: int, customers: int, products: int,
             checkouts: bool = True) -> list[CartEvent]:
    """Random cart events: 60% adds, 20% removes, 10% checkouts, 10% clears (without checkouts:
    70% adds, the same draws otherwise)."""
    rng = random.Random(1)
    out = []
    for _ in range(events):
        kind = rng.choice(KINDS)
        if not checkouts and kind is EventType.CHECKOUT:
            kind = EventType.ITEM_ADDED
        cid = f"customer-{rng.randrange(customers)}"
        item = str(rng.randint(1, products)) if kind in (EventType.ITEM_ADDED,
                                                         EventType.ITEM_REMOVED) else None
        out.append(new_cart_event(kind, cid, item,
                                  rng.randint(1, 3) if kind is EventType.ITEM_ADDED else None))
    return out


def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (a run's own), and wait for it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix)]
    for future in (admin.delete_topics(names).values() if names else ()):
        future.result(timeout=60)
    return names


def preload(bootstrap: str, tag: str, events: list[CartEvent],
            products: dict[str, Product]) -> dict[str, str]:
    """Fresh input topics holding the catalog and the events."""
    names = {"TOPIC_CART_EVENTS": f"bench-{tag}-events", "TOPIC_PRODUCTS": f"bench-{tag}-products"}
    create_topics(bootstrap, {names["TOPIC_CART_EVENTS"]: 6, names["TOPIC_PRODUCTS"]: 3})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1 << 20,
                         "compression.type": "lz4", "queue.buffering.max.messages": 500_000})

    def send(topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, value, key)
                return
            except BufferError:
                producer.poll(0.05)

    for p in products.values():
        send(names["TOPIC_PRODUCTS"], p.product_id.encode(), encode_product(p))
    for ev in events:
        send(names["TOPIC_CART_EVENTS"], ev.customer_id.encode(), encode_cart_event(ev))
    assert producer.flush(120) == 0
    return names


def record_count(consumer: Consumer, topic: str, partitions: int) -> int:
    """Records in a topic now (sum of high watermarks); 0 while its metadata settles."""
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(partitions))
    except KafkaException:
        return 0


def status_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in KiB (VmHWM = peak RSS); 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The process and all its children, recursively."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except FileNotFoundError:
                pass
    return out


def run_flow(bootstrap: str, inputs: dict[str, str], tag: str, events: int,
             processes: int, root: Path = ROOT, settings: dict[str, str] | None = None,
             prefix: tuple[str, ...] = ()) -> dict:
    """Run the aggregator until every event has its record; measure rate and memory.

    `settings`: more environment (AGG_* variants); `prefix`: a command to run it under (py-spy).
    """
    run_tag = uuid.uuid4().hex[:6]
    out = {"TOPIC_CART_DETAILS": f"bench-{tag}-details-{processes}p-{run_tag}",
           "TOPIC_DEAD_LETTER": f"bench-{tag}-dead-{processes}p-{run_tag}",
           # Stock at checkout: the request log (one partition) and the reserved counts; a
           # tree without the reservation stage ignores them.
           "TOPIC_CART_RESERVATIONS": f"bench-{tag}-reservations-{processes}p-{run_tag}",
           "TOPIC_PRODUCT_RESERVATIONS": f"bench-{tag}-reserved-{processes}p-{run_tag}"}
    create_topics(bootstrap, {out["TOPIC_CART_DETAILS"]: 6, out["TOPIC_DEAD_LETTER"]: 1,
                              out["TOPIC_CART_RESERVATIONS"]: 1,
                              out["TOPIC_PRODUCT_RESERVATIONS"]: 3})
    run_dir = Path(tempfile.mkdtemp(prefix="agg-bench-"))
    env = {**os.environ, **inputs, **out, "KAFKA_BOOTSTRAP": bootstrap, "RUN_DIR": str(run_dir),
           "AGG_PROCESSES": str(processes), "AGG_METRICS_PORT": str(free_port_block(processes)),
           "AGG_CLUSTER_PORT": str(free_port_block(processes)), "PYTHONUNBUFFERED": "1",
           **(settings or {})}
    log = (run_dir / "aggregator.log").open("wb")
    # This tree has one command line; the baseline commit predates it.
    command = (["cartstream", "aggregate"] if (root / "cartstream" / "cli.py").exists()
               else ["cart_aggregator"])
    proc = subprocess.Popen([*prefix, sys.executable, "-m", *command], cwd=root, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    start = time.monotonic()
    first = last = None
    cpu = cpu_first = 0.0
    peaks: dict[int, int] = {}
    try:
        while True:
            n = record_count(consumer, out["TOPIC_CART_DETAILS"], 6)
            now = time.monotonic()
            if n and first is None:
                first = (now, n)
                cpu_first = sum(cpu_seconds(pid) for pid in descendants(proc.pid))
            for pid in descendants(proc.pid):
                peaks[pid] = max(peaks.get(pid, 0), status_kib(pid, "VmHWM"))
            if n >= events:
                last = now
                cpu = sum(cpu_seconds(pid) for pid in descendants(proc.pid))
                break
            if proc.poll() is not None or now - start > 900:
                raise RuntimeError(f"aggregator stopped early; see {run_dir}/aggregator.log")
            time.sleep(0.1)
        dead = record_count(consumer, out["TOPIC_DEAD_LETTER"], 1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        consumer.close()
    assert first is not None and last is not None and cpu
    assert n == events, f"{n} records for {events} events"
    assert dead == 0, f"{dead} dead letters"
    seconds = last - first[0]
    # The launcher itself only supervises; report the flow processes.
    flow_peaks = [kib // 1024 for pid, kib in sorted(peaks.items())
                  if processes == 1 or pid != proc.pid]
    return {"tree": "new" if root == ROOT else "baseline", "processes": processes,
            "events": events, "records": n,
            "startup_s": round(first[0] - start, 2), "seconds": round(seconds, 2),
            "events_per_s": round((events - first[1]) / seconds) if seconds else None,
            "end_to_end_events_per_s": round(events / (last - start)),
            # Robust to other load on the machine: events per CPU-second the flow used,
            # start-up (imports, connecting) included.
            "cpu_s": round(cpu, 2), "events_per_cpu_s": round(events / cpu),
            # The same from the first output record to the last (start-up left out), which is
            # what the sustained rate measures too; the CPU sample is taken every 0.1 s.
            "sustained_events_per_cpu_s": round((events - first[1]) / (cpu - cpu_first))
            if cpu > cpu_first else None,
            "peak_rss_mib": flow_peaks}


def snapshot_bytes(events: list[CartEvent], products: dict[str, Product]) -> dict:
    """Pickled fold snapshot per open cart (what recovery copies each epoch), this tree."""
    catalog = {pid: product_tuple(p) for pid, p in products.items()}
    logics: dict[str, FoldLogic] = {}
    for i, ev in enumerate(events):
        logic = logics.get(ev.customer_id) or logics.setdefault(ev.customer_id, FoldLogic(None))
        w = (ev.event_id, ev.type.value, ev.customer_id, ev.item_id, ev.qty, ev.occurred_at, 0, i,
             None)  # no If-Match: WIRE_FIELDS
        answer = [(i, catalog.get(ev.item_id or ""))] if ev.type is EventType.ITEM_ADDED else []
        out, _ = logic.on_batch([w, *answer])
        for req in [x for x in out if type(x) is not bytes]:  # a checkout: reserved at once
            logic.on_batch([(req[2], ("RESERVED", tuple(
                (pid, catalog[pid][1], qty, price) for pid, qty, price in req[3])))])
    opens = [lg for lg in logics.values() if lg.state and lg.state.status == "OPEN"
             and lg.state.lines]
    sizes = sorted(len(pickle.dumps(lg.snapshot())) for lg in opens)
    lines = sorted(len(lg.state.lines) for lg in opens if lg.state)
    return {"open_carts": len(opens), "median_lines": lines[len(lines) // 2],
            "median_bytes": sizes[len(sizes) // 2], "p90_bytes": sizes[len(sizes) * 9 // 10]}


RSS_PROBE = r"""
import sys
from decimal import Decimal
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main
from cart_aggregator.config import Config
from cart_aggregator.flow import build_flow
from cart_contract import EventType, Product, encode_cart_event, encode_product, new_cart_event

customers, per_customer = int(sys.argv[1]), int(sys.argv[2])
total = customers * per_customer
products = [KafkaSourceMessage(str(i).encode(), encode_product(
    Product(str(i), f"Product {i}", Decimal("19.99"), 10**6)), topic="p", partition=0, offset=i)
    for i in range(1, 4)]

def events():  # each customer: adds over 3 products, i.e. an open 3-line cart
    n = 0
    for rnd in range(per_customer):
        for c in range(customers):
            ev = new_cart_event(EventType.ITEM_ADDED, f"customer-{c:08d}", str(rnd % 3 + 1), 1)
            yield KafkaSourceMessage(ev.customer_id.encode(), encode_cart_event(ev), topic="e",
                                     partition=0, offset=n)
            n += 1

class Probe(StatelessSinkPartition):
    seen = 0
    def write_batch(self, items):
        Probe.seen += len(items)
        if Probe.seen == total:  # every state is live now
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    print(int(line.split()[1]))

class RssProbeSink(DynamicSink):  # counts the records and prints the RSS once all are out
    def build(self, *args):
        return Probe()

kwargs = {}
try:  # this tree: the reservation stage's request topic in memory, never the shared broker's
    from tests.support.loopback import Loopback
    loop = Loopback(idle_s=0.5)
    kwargs = {"reservation_source": loop.source(), "reservation_sink": loop.sink(),
              "reserved_sink": RssProbeSink()}
except ImportError:
    pass
run_main(build_flow(Config(), cart_source=TestingSource(events(), batch_size=1000),
                    product_source=TestingSource(products, batch_size=10),
                    cart_sink=RssProbeSink(), dead_letter_sink=RssProbeSink(), **kwargs))
"""


def rss_per_customer(customers: int, events_each: int, root: Path = ROOT) -> int:
    """Marginal RSS bytes per customer with an open 3-line cart, in a live in-memory flow."""
    def rss(n: int) -> int:
        res = subprocess.run([sys.executable, "-c", RSS_PROBE, str(n), str(events_each)],
                             cwd=root, check=True, capture_output=True, text=True)
        return int(res.stdout.split()[-1])

    small, big = rss(customers), rss(2 * customers)
    return round((big - small) * 1024 / customers)


# The plain loop, run in a tree's directory so that it imports that tree's aggregator. Modes:
# "ceiling": parse (the flow's parse_cart_events, 1,000-record batches) + fold + encode, timed;
# "fold": the events parsed beforehand, `passes` passes of fold + encode (for callgrind).
LOOP_PROBE = r"""
import pickle, sys, time
from cart_aggregator.flow import parse_cart_events
from cart_aggregator.sources import SourceMessage

data = pickle.load(open(sys.argv[1], "rb"))
n, mode, passes = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
msgs = [SourceMessage(k, v, "cart-events", 0, i) for i, (k, v) in enumerate(data["events"][:n])]
products = data["products"]
try:  # this tree: events as parsed, each add with its product (the join's answer)
    from cart_aggregator.fold import LineCache, SavedFold, apply, encode_state

    try:  # a checkout's answer: reserved at the cart's own prices (the stage is not in the loop)
        from cart_aggregator.fold import needs_reservation
    except ImportError:
        def needs_reservation(s, w):
            return False

    def reserved(s, w, product):
        if w[1] == "CHECKOUT" and needs_reservation(s, w):
            return ("RESERVED", tuple((li.item_id, li.item_name, li.qty, li.unit_price)
                                      for li in s.lines))
        return product

    def prepare(pairs):
        return [(w, products.get(w[3]) if w[1] == "ITEM_ADDED" else None) for _, w in pairs]

    def fold(ready):
        states, cache = {}, LineCache()
        get = states.get
        for w, product in ready:
            cid = w[2]
            s = get(cid)
            s, _ = apply(s, w, reserved(s, w, product), cache)
            states[cid] = s
            encode_state(s)

    def parse_fold(batch):
        states, cache = STATE
        get = states.get
        for cid, w in parse_cart_events(batch):
            s = get(cid)
            s, _ = apply(s, w, reserved(s, w, products.get(w[3]) if w[1] == "ITEM_ADDED"
                                        else None), cache)
            states[cid] = s
            encode_state(s)
except ImportError:  # the baseline: versioned wires that carry their product
    from cart_aggregator.fastfold import LineCache, apply_wire, encode_state

    def prepare(pairs):
        versions, out = {}, []
        for cid, w in pairs:
            v = versions[cid] = versions.get(cid, 0) + 1
            out.append((v, *w[1:10], products.get(w[4]) if w[2] == "ITEM_ADDED" else None))
        return out

    def fold(ready):
        states, cache = {}, LineCache()
        get = states.get
        for w in ready:
            cid = w[3]
            s, _ = apply_wire(get(cid), w, cache)
            states[cid] = s
            encode_state(s)

    def parse_fold(batch):
        states, cache = STATE
        get = states.get
        for cid, w in parse_cart_events(batch):
            s = get(cid)
            w = (s[4] + 1 if s is not None else 1, *w[1:10],
                 products.get(w[4]) if w[2] == "ITEM_ADDED" else None)
            s, _ = apply_wire(s, w, cache)
            states[cid] = s
            encode_state(s)

if mode == "fold":
    ready = prepare(parse_cart_events(msgs))
    for _ in range(passes):
        fold(ready)
else:
    best = 0.0
    for _ in range(passes):
        STATE = ({}, LineCache())
        t0 = time.perf_counter()
        for i in range(0, len(msgs), 1000):
            parse_fold(msgs[i:i + 1000])
        best = max(best, len(msgs) / (time.perf_counter() - t0))
    print(round(best))
"""


def loop_data(events: list[CartEvent], products: dict[str, Product]) -> Path:
    """The events and catalog, pickled for LOOP_PROBE."""
    path = Path(tempfile.mkdtemp(prefix="agg-loop-")) / "events.pickle"
    path.write_bytes(pickle.dumps({
        "events": [(ev.customer_id.encode(), encode_cart_event(ev)) for ev in events],
        "products": {pid: product_tuple(p) for pid, p in products.items()}}))
    return path


def loop_ceiling(data: Path, events: int, root: Path) -> int:
    """Events/s of parse + fold + encode in a plain Python loop (best of 3 passes)."""
    res = subprocess.run([sys.executable, "-c", LOOP_PROBE, str(data), str(events), "ceiling",
                          "3"], cwd=root, check=True, capture_output=True, text=True)
    return int(res.stdout.split()[-1])


def callgrind_ir(data: Path, events: int, passes: int, root: Path) -> int:
    """Instructions (Ir) callgrind counts for LOOP_PROBE's fold mode."""
    out = Path(tempfile.mkdtemp(prefix="agg-cg-")) / "callgrind.out"
    res = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          sys.executable, "-c", LOOP_PROBE, str(data), str(events), "fold",
                          str(passes)], cwd=root, check=True, capture_output=True, text=True)
    for line in res.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split(":")[-1].strip().replace(",", ""))
    raise RuntimeError(res.stderr[-2000:])


def fold_instructions(data: Path, events: int, roots: dict[str, Path]) -> dict[str, float]:
    """Instructions per event of fold + encode: (two passes - one pass) / events."""
    return {name: round((callgrind_ir(data, events, 2, root) -
                         callgrind_ir(data, events, 1, root)) / events)
            for name, root in roots.items()}


@contextlib.contextmanager
def baseline_tree(commit: str) -> Iterator[Path]:
    """The aggregator at `commit`, checked out in a temporary git worktree."""
    path = ROOT / ".run" / f"bench-baseline-{uuid.uuid4().hex[:6]}"
    path.parent.mkdir(exist_ok=True)
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), commit], cwd=ROOT,
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=True)


def summary(runs: list[dict]) -> dict[str, dict]:
    """Per tree and process count: the median sustained rate, events per CPU-second, range.

    This tree's keys are "1_process", "2_processes" (bench/report.py reads them); the
    baseline's have a "baseline_" prefix.
    """
    out = {}
    for tree in ("baseline", "new"):
        for n in sorted({r["processes"] for r in runs}):
            mine = [r for r in runs if r["processes"] == n and r["tree"] == tree]
            if not mine:
                continue
            rates = sorted(r["events_per_s"] for r in mine)
            cpu = sorted(r["events_per_cpu_s"] for r in mine)
            sustained = sorted(r["sustained_events_per_cpu_s"] or 0 for r in mine)
            prefix = "" if tree == "new" else "baseline_"
            out[f"{prefix}{n}_process" + ("es" if n > 1 else "")] = {
                "events_per_s_median": round(statistics.median(rates)),
                "events_per_s_range": [rates[0], rates[-1]],
                "events_per_cpu_s_median": round(statistics.median(cpu)),
                "events_per_cpu_s_range": [cpu[0], cpu[-1]],
                "sustained_events_per_cpu_s_median": round(statistics.median(sustained))}
    return out


def settings_variants(args: argparse.Namespace) -> None:
    """This tree's flow under each group of settings in turn, `args.repeat` rounds."""
    variants = [dict(kv.split("=", 1) for kv in v.split()) for v in args.variants]
    tag = uuid.uuid4().hex[:8]
    inputs = preload(args.bootstrap, tag, workload(args.events, args.customers, args.products),
                     catalog(args.products))
    processes = args.processes[0]
    runs: list[dict] = []
    try:
        for _ in range(args.repeat):
            for i, settings in enumerate(variants):  # alternately: all see the same load
                r = run_flow(args.bootstrap, inputs, tag, args.events, processes,
                             settings=settings)
                r.update(variant=i, settings=settings, load=os.getloadavg()[0])
                runs.append(r)
                print(json.dumps(r), flush=True)
    finally:
        delete_topics(args.bootstrap, f"bench-{tag}-")
    table = []
    for i, settings in enumerate(variants):
        mine = [r for r in runs if r["variant"] == i]
        us = statistics.median(1e6 * r["cpu_s"] / r["events"] for r in mine)
        sustained = statistics.median(1e6 / (r["sustained_events_per_cpu_s"] or 1e-9)
                                      for r in mine)
        table.append({"settings": settings, "cpu_us_per_event_median": round(us, 1),
                      "cpu_us_per_event": [round(1e6 * r["cpu_s"] / r["events"], 1)
                                           for r in mine],
                      "sustained_cpu_us_per_event_median": round(sustained, 1),
                      "events_per_s_median": round(statistics.median(r["events_per_s"]
                                                                     for r in mine)),
                      "peak_rss_mib_max": max(max(r["peak_rss_mib"]) for r in mine)})
    for row in table:
        row["cpu_over_first"] = round(row["cpu_us_per_event_median"]
                                      / table[0]["cpu_us_per_event_median"], 2)
    result = {"workload": {"events": args.events, "customers": args.customers,
                           "products": args.products}, "processes": processes,
              "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()[0]},
              "runs": runs, "variants": table}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "aggregator_variants.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| settings | CPU µs/event (median) | sustained | / first | events/s | peak RSS MiB |\n"
          "|---|---|---|---|---|---|")
    for row in table:
        name = " ".join(f"{k}={v}" for k, v in row["settings"].items()) or "defaults"
        print(f"| {name} | {row['cpu_us_per_event_median']} {row['cpu_us_per_event']} | "
              f"{row['sustained_cpu_us_per_event_median']} | {row['cpu_over_first']} | "
              f"{row['events_per_s_median']} | {row['peak_rss_mib_max']} |")


def stock_cost(args: argparse.Namespace) -> None:
    """Events/s with and without checkouts, baseline and this tree alternately, same run."""
    tag = uuid.uuid4().hex[:8]
    products = catalog(args.products)
    runs: list[dict] = []
    with baseline_tree(args.baseline) as old:
        for mix, checkouts in (("10% checkouts", True), ("no checkouts", False)):
            events = workload(args.events, args.customers, args.products, checkouts)
            inputs = preload(args.bootstrap, f"{tag}-{int(checkouts)}", events, products)
            for _ in range(args.repeat):
                for root in (old, ROOT):
                    r = run_flow(args.bootstrap, inputs, tag, args.events, 1, root)
                    r["mix"] = mix
                    runs.append(r)
                    print(json.dumps(r))
    table = {}
    for mix in ("10% checkouts", "no checkouts"):
        row = {}
        for tree in ("baseline", "new"):
            mine = [r for r in runs if r["mix"] == mix and r["tree"] == tree]
            row[tree] = {
                "events_per_s_median": round(statistics.median(r["events_per_s"] for r in mine)),
                "events_per_s": [r["events_per_s"] for r in mine],
                "sustained_events_per_cpu_s_median": round(statistics.median(
                    r["sustained_events_per_cpu_s"] or 0 for r in mine))}
        row["new_over_baseline_events_per_s"] = round(
            row["new"]["events_per_s_median"] / row["baseline"]["events_per_s_median"], 3)
        row["new_over_baseline_events_per_cpu_s"] = round(
            row["new"]["sustained_events_per_cpu_s_median"]
            / max(row["baseline"]["sustained_events_per_cpu_s_median"], 1), 3)
        table[mix] = row
    result = {"baseline": args.baseline, "workload": {"events": args.events,
              "customers": args.customers, "products": args.products},
              "load_average": os.getloadavg()[0], "runs": runs, "summary": table,
              "target": "new/baseline with 10% checkouts >= 0.85 (events/s)"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "aggregator_stock.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(table, indent=2))


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP",
                                                              "localhost:9092"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--stock", action="store_true",
                        help="the cost of the reservation stage: the workload with 10%% "
                             "checkouts and without, each through the baseline and this tree "
                             "(1 process; use --baseline with the commit before the stage)")
    parser.add_argument("--variants", nargs="+", metavar="SETTINGS",
                        help="this tree only, once per group of space-separated NAME=VALUE "
                             "settings (\"\" = the defaults), alternately")
    args = parser.parse_args()
    if args.variants:
        settings_variants(args)
        return
    if args.stock:
        stock_cost(args)
        return
    tag = uuid.uuid4().hex[:8]
    load_at_start = os.getloadavg()[0]
    products = catalog(args.products)
    events = workload(args.events, args.customers, args.products)
    data = loop_data(events, products)
    with baseline_tree(args.baseline) as old:
        roots = {"baseline": old, "new": ROOT}
        if args.callgrind:
            ir = fold_instructions(data, args.events, roots)
            print(json.dumps({"fold_instructions_per_event": ir,
                              "new_over_baseline": round(ir["new"] / ir["baseline"], 3)}))
            return
        t0 = time.monotonic()
        inputs = preload(args.bootstrap, tag, events, products)
        print(f"preloaded {args.events} events, {args.products} products "
              f"in {time.monotonic() - t0:.1f}s")
        runs = []
        for _ in range(args.repeat):
            for n in args.processes:
                for root in (old, ROOT):  # alternately: both see the same machine load
                    runs.append(run_flow(args.bootstrap, inputs, tag, args.events, n, root))
                    print(json.dumps(runs[-1]))
        ceilings = {name: loop_ceiling(data, args.events, root) for name, root in roots.items()}
        # A typical customer of the workload: ~10 events, 3 lines.
        state = {"snapshot": snapshot_bytes(events, products),
                 "rss_bytes_per_open_cart": {name: rss_per_customer(10_000, 10, root)
                                             for name, root in roots.items()}}
    sums = summary(runs)
    ratios = {}
    for n in args.processes:
        key = f"{n}_process" + ("es" if n > 1 else "")
        old_s, new_s = sums["baseline_" + key], sums[key]
        ratios[f"{n}p"] = {
            "events_per_s": round(new_s["events_per_s_median"] / old_s["events_per_s_median"], 2),
            "events_per_cpu_s": round(new_s["events_per_cpu_s_median"]
                                      / old_s["events_per_cpu_s_median"], 2),
            "sustained_events_per_cpu_s": round(
                new_s["sustained_events_per_cpu_s_median"]
                / max(old_s["sustained_events_per_cpu_s_median"], 1), 2),
            "new_over_ceiling": round(new_s["events_per_s_median"] / ceilings["new"], 2)}
    result = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "load_average_at_start": load_at_start},
        "workload": {"events": args.events, "customers": args.customers,
                     "products": args.products},
        "baseline": args.baseline,
        "runs": runs,
        "summary": sums,
        "new_over_baseline": ratios,
        "plain_loop_ceiling_events_per_s": ceilings,
        # bench/report.py reads this key: the live (RSS) figure of this tree.
        "state_bytes_per_open_cart": state["rss_bytes_per_open_cart"]["new"],
        "state_per_open_cart": state,
        "targets": {"new_over_baseline_1p": 1.3, "new_over_ceiling_1p": 0.6,
                    "state_bytes_per_open_cart": 1536},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "aggregator.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| tree | processes | events/s (sustained) | events/CPU-s | events/CPU-s sustained "
          "| startup s | peak RSS MiB |\n|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['tree']} | {r['processes']} | {r['events_per_s']} | "
              f"{r['events_per_cpu_s']} | {r['sustained_events_per_cpu_s']} | "
              f"{r['startup_s']} | {r['peak_rss_mib']} |")
    print(json.dumps(sums))
    print("new / baseline:", json.dumps(ratios))
    print("plain-loop ceiling (parse + fold, events/s):", json.dumps(ceilings))
    print(f"state per open cart: live RSS {state['rss_bytes_per_open_cart']} B; snapshot "
          f"{state['snapshot']['median_bytes']} B (median, {state['snapshot']['median_lines']} "
          f"lines); target <= 1536")


if __name__ == "__main__":
    main()
