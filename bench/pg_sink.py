"""The PostgreSQL cart sink alone: cart-details bytes → PostgresCartWriter, no Kafka.

    python bench/pg_sink.py [--customers 20000] [--rounds 5] [--batch-max 5000] [--repeat 2]
                            [--lines random|edit] [--variants current before]

Builds `customers × rounds` encoded cart-details records like the aggregator's (a customer
part, 1-4 lines, every 7th cart checked out and the next generation opened); round r holds
every customer's version r, so with `customers >= batch-max` no batch holds two versions of a
cart (conflation off: every record is a row to write). `--conflate K` instead repeats each
record K times with growing versions inside a batch. `--lines random` draws every version's
lines anew (every line changes: the worst case for the sink's line diff); `--lines edit`
changes one line per version, as a command does (mostly a qty, sometimes a line added or
removed). Each variant (a writer class named in VARIANTS) runs into a fresh database,
alternately, `--repeat` times; reported per run: records/s over the writes, CPU per record of
this process (decode + rows) and of its PostgreSQL backend (from /proc), so the figures hold
under other load on the box, and the backend's CPU per record in each statement
(/proc/<pid>/schedstat around it).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu import tree_cpu_s  # noqa: E402
from cart_contract import (  # noqa: E402
    CartDetails,
    CustomerView,
    EventPosition,
    LineItem,
    encode_cart_details,
)
from cart_contract.layout import CART_LINES_TABLE, CARTS_TABLE, CUSTOMERS_TABLE  # noqa: E402
from connectors.config import Config  # noqa: E402
from connectors.consumer import tune_gc  # noqa: E402
from connectors.records import newest  # noqa: E402
from connectors.sinks import PostgresCartWriter  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGET = 50_000


class PipelineWriter(PostgresCartWriter):
    """The alternative the issue names: one `INSERT … ON CONFLICT` per row, sent with psycopg's
    pipeline mode (executemany), same guards and results as the COPY path."""

    def write(self, prepared: Any) -> list[Any]:
        conn = self.db.connection()
        docs = [(i.cart, i.doc) for i in prepared.items]
        customers = newest(docs, lambda d: d[0].customer_id, lambda d: d[0].customer_version)
        carts = [d for d in docs if d[0].generation > 0]
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(_ROW_CUSTOMER, [
                (c.customer_id, c.customer_version, c.customer_event.partition,
                 c.customer_event.offset, doc.decode()) for c, doc in customers])
            cur.executemany(_ROW_CART, [
                (c.cart_id, c.customer_id, c.generation, c.status, c.total_qty, c.total_price,
                 c.version, c.last_event.partition, c.last_event.offset, c.last_event.event_id,
                 c.updated_at, doc.decode()) for c, doc in carts], returning=True)
            won = set()
            while True:
                won.update(row[0] for row in cur.fetchall())
                if not cur.nextset():
                    break
            if won:
                cur.execute(f"DELETE FROM {CART_LINES_TABLE} WHERE cart_id = ANY(%s)",
                            (list(won),))
                cur.executemany(_ROW_LINE, [
                    (c.cart_id, li.item_id, pos, li.item_name, li.qty, li.unit_price,
                     li.total_price)
                    for c, _ in carts if c.cart_id in won for pos, li in enumerate(c.line_items)])
        self.written += len(won)
        return prepared.poison


class BeforeWriter(PostgresCartWriter):
    """The sink as it was before migration 0005: tables at the default fillfactor (full pages,
    so an update's new row version goes to another page and is never HOT)."""

    def setup(self, conn: psycopg.Connection) -> None:
        for table in (CUSTOMERS_TABLE, CARTS_TABLE, CART_LINES_TABLE):
            conn.execute(f"ALTER TABLE {table} RESET (fillfactor)")


_ROW_CUSTOMER = f"""
INSERT INTO {CUSTOMERS_TABLE} (customer_id, version, last_partition, last_offset, doc)
VALUES (%s, %s, %s, %s, %s::jsonb)
ON CONFLICT (customer_id) DO UPDATE SET version = EXCLUDED.version,
    last_partition = EXCLUDED.last_partition, last_offset = EXCLUDED.last_offset,
    doc = EXCLUDED.doc
WHERE {CUSTOMERS_TABLE}.version < EXCLUDED.version
"""
_ROW_CART = f"""
INSERT INTO {CARTS_TABLE} (cart_id, customer_id, generation, status, total_qty, total_price,
    version, last_partition, last_offset, last_event_id, updated_at, doc)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb - 'customer')
ON CONFLICT (cart_id) DO UPDATE SET
    status = EXCLUDED.status, total_qty = EXCLUDED.total_qty,
    total_price = EXCLUDED.total_price, version = EXCLUDED.version,
    last_partition = EXCLUDED.last_partition, last_offset = EXCLUDED.last_offset,
    last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at, doc = EXCLUDED.doc
WHERE {CARTS_TABLE}.version < EXCLUDED.version
RETURNING cart_id
"""
_ROW_LINE = (f"INSERT INTO {CART_LINES_TABLE} (cart_id, item_id, position, item_name, qty,"
             " unit_price, total_price) VALUES (%s, %s, %s, %s, %s, %s, %s)")
VARIANTS: dict[str, type[PostgresCartWriter]] = {"current": PostgresCartWriter,
                                                 "before": BeforeWriter,
                                                 "pipeline": PipelineWriter}


class StatementClock:
    """The backend's CPU (ns, /proc/<pid>/schedstat: exact, not in clock ticks) in each
    statement, summed by the statement's first words."""

    def __init__(self, pid: int) -> None:
        self.path, self.ns = f"/proc/{pid}/schedstat", {}

    def now(self) -> int:
        with open(self.path) as f:
            return int(f.read().split()[0])

    def add(self, query: Any, ns: int) -> None:
        name = " ".join(str(query).split()[:3])
        self.ns[name] = self.ns.get(name, 0) + ns

    def cursor_factory(self) -> type[psycopg.Cursor]:
        clock = self

        class Timed(psycopg.Cursor):
            def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
                t0 = clock.now()
                try:
                    return super().execute(query, params, **kw)
                finally:
                    clock.add(query, clock.now() - t0)

            def executemany(self, query: Any, params_seq: Any, **kw: Any) -> None:
                t0 = clock.now()
                try:
                    super().executemany(query, params_seq, **kw)
                finally:
                    clock.add(query, clock.now() - t0)

            @contextlib.contextmanager
            def copy(self, statement: Any, *a: Any, **kw: Any) -> Any:
                t0 = clock.now()
                try:
                    with super().copy(statement, *a, **kw) as copy:
                        yield copy
                finally:
                    clock.add(statement, clock.now() - t0)

        return Timed


class Message:
    """The part of a Kafka message the sink reads."""

    __slots__ = ("_value", "_offset")

    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return 0

    def topic(self) -> str:
        return "bench"

    def key(self) -> None:
        return None


def cart(customer: str, version: int, rng: random.Random,
         lines: list[LineItem] | None = None) -> CartDetails:
    """A customer's record at `version` (its `lines`, or 1-4 drawn anew): every 7th version
    checks the cart out."""
    generation = version // 7 + 1
    if lines is None:
        lines = [line(i + 1, rng) for i in range(rng.randint(1, 4))]
    event = EventPosition(str(uuid.uuid4()), 0, version)
    status = "CHECKED_OUT" if version % 7 == 6 else "OPEN"
    return CartDetails(customer, f"{customer}:{generation}", status, tuple(lines),
                       sum(li.qty for li in lines), sum((li.total_price for li in lines),
                                                        Decimal(0)),
                       version, event, (), "2026-11-22T10:00:00.000000Z",
                       customer=CustomerView(version, event, (), "2026-11-22T10:00:00.000000Z"))


def line(item: int, rng: random.Random, qty: int | None = None) -> LineItem:
    price = Decimal(f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}")
    qty = rng.randint(1, 5) if qty is None else qty
    return LineItem(str(item), f"Product {item}", qty, price, price * qty)


def edit(lines: list[LineItem], rng: random.Random) -> list[LineItem]:
    """One command's change: mostly another qty of one line, else a line added or removed."""
    roll = rng.random()
    if roll < 0.25 and len(lines) < 8:
        return [*lines, line(max(int(li.item_id) for li in lines) + 1, rng)]
    if roll < 0.35 and len(lines) > 1:
        gone = rng.randrange(len(lines))
        return lines[:gone] + lines[gone + 1:]
    i = rng.randrange(len(lines))
    qty = lines[i].qty % 5 + 1
    changed = LineItem(lines[i].item_id, lines[i].item_name, qty, lines[i].unit_price,
                       lines[i].unit_price * qty)
    return lines[:i] + [changed] + lines[i + 1:]


def records(customers: int, rounds: int, conflate: int, lines: str = "random") -> list[Message]:
    """Round r: every customer's version r (each repeated `conflate` times, versions growing)."""
    rng = random.Random(7)
    out: list[Message] = []
    held: dict[int, tuple[int, list[LineItem]]] = {}  # per customer: generation and its lines
    for r in range(rounds):
        for c in range(customers):
            for k in range(conflate):
                version = r * conflate + k + 1
                items = None
                if lines == "edit":
                    generation, before = held.get(c, (0, []))
                    items = (edit(before, rng) if generation == version // 7 + 1
                             else [line(i + 1, rng) for i in range(rng.randint(1, 4))])
                    held[c] = (version // 7 + 1, items)
                out.append(Message(encode_cart_details(cart(f"p{c}", version, rng, items)),
                                   len(out)))
    return out


def backend_cpu_s(conn: psycopg.Connection) -> float:
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    return tree_cpu_s(pid)


def run(variant: str, server_url: str, msgs: list[Message], batch_max: int) -> dict[str, Any]:
    """Write every batch into a fresh database; CPU of this process and of the backend."""
    db = f"bench_pg_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    try:
        writer = VARIANTS[variant](server_url.rsplit("/", 1)[0] + f"/{db}")
        conn = writer.db.connection()
        if hasattr(writer, "setup"):
            writer.setup(conn)
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        clock = StatementClock(backend)
        conn.cursor_factory = clock.cursor_factory()
        batches = [msgs[i:i + batch_max] for i in range(0, len(msgs), batch_max)]
        server0, client0, t0 = tree_cpu_s(backend), time.process_time(), time.perf_counter()
        prepare_s = 0.0
        for batch in batches:
            p0 = time.process_time()
            prepared = writer.prepare(batch)
            prepare_s += time.process_time() - p0
            assert not writer.write(prepared)
        seconds = time.perf_counter() - t0
        client, server = time.process_time() - client0, tree_cpu_s(backend) - server0
        statements = {k: round(v / 1e3 / len(msgs), 1)
                      for k, v in sorted(clock.ns.items(), key=lambda kv: -kv[1])}
        conn.cursor_factory = psycopg.Cursor
        rows = conn.execute("SELECT count(*), sum(version) FROM carts").fetchone()
        lines = conn.execute("SELECT count(*) FROM cart_lines").fetchone()[0]
        customers = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
        writer.db.close()
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    n = len(msgs)
    return {"variant": variant, "records": n, "seconds": round(seconds, 2),
            "records_per_s": round(n / seconds), "written": writer.written,
            "client_us_per_record": round(client * 1e6 / n, 1),
            "prepare_us_per_record": round(prepare_s * 1e6 / n, 1),
            "server_us_per_record": round(server * 1e6 / n, 1),
            "cpu_bound_records_per_s": round(n / max(client, server)),
            "server_us_per_record_by_statement": statements,
            "tables": {"carts": rows[0], "cart_lines": lines, "customers": customers,
                       "version_sum": int(rows[1] or 0)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--conflate", type=int, default=1)
    parser.add_argument("--lines", choices=("random", "edit"), default="random")
    parser.add_argument("--batch-max", type=int, default=Config().batch_max)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    msgs = records(args.customers, args.rounds, args.conflate, args.lines)
    # The records this bench holds are not the sink's: out of the collector's way, and the
    # process collects as a sink's does (connectors.service.main).
    gc.freeze()
    tune_gc()
    url = Config.from_env().database_url
    runs = []
    for _ in range(args.repeat):
        for variant in args.variants:  # alternately: the box's load drifts
            runs.append(run(variant, url, msgs, args.batch_max))
            print(json.dumps(runs[-1]), flush=True)
    tables = {json.dumps(r["tables"], sort_keys=True) for r in runs}
    assert len(tables) == 1, f"variants stored different tables: {tables}"
    result = {"target_records_per_s": TARGET, "runs": runs,
              "setup": {**vars(args), "load_average": [round(x, 2) for x in os.getloadavg()]}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pg_sink.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| variant | records/s | client µs/rec | server µs/rec | CPU-bound rec/s |")
    print("|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['variant']} | {r['records_per_s']} | {r['client_us_per_record']} | "
              f"{r['server_us_per_record']} | {r['cpu_bound_records_per_s']} |")
    print("\nserver µs/record by statement:")
    for r in runs:
        print(f"  {r['variant']}: " + ", ".join(
            f"{k} {v}" for k, v in r["server_us_per_record_by_statement"].items()))


if __name__ == "__main__":
    main()
