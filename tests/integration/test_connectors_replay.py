"""Connectors: `cartstream replay` rebuilds the same read models as the live run."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis

from cart_contract import (
    CartEvent,
    EventType,
    Product,
    encode_cart_details,
    encode_cart_event,
    encode_product,
    new_cart_event,
)
from cart_contract.layout import cart_key
from connectors import replay
from connectors.config import Config
from connectors.consumer import DeadLetters, Stopper, run
from connectors.migrate import migrate
from connectors.service import build_sink
from tests.support.cli import cartstream
from tests.support.connectors import (
    cart,
    committed,
    create_topics,
    drain,
    end_offsets,
    fresh_database,
    private_config,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def cfg(kafka_bootstrap, redis_url, database_url, unique, tmp_path) -> Config:
    db = fresh_database(database_url, f"test_{unique}")
    with psycopg.connect(db, autocommit=True) as conn:
        migrate(conn)
    return private_config(kafka_bootstrap, redis_url, db, unique, partitions=3).replace(
        run_dir=tmp_path / "run")


def history(cfg: Config, unique: str) -> None:
    """Carts over two generations (the first checked out), products with a deletion, poison."""
    carts = []
    for i in range(30):
        c = f"r{unique}-{i}"
        for v in range(1, 6):
            carts.append((c.encode(), encode_cart_details(
                cart(c, v, generation=1 if v <= 3 else 2, qty=v, lines=1 + v % 3,
                     checked_out=v == 3))))
    carts.append((b"x", b"not json"))
    produce(cfg.kafka_bootstrap, cfg.topic_cart_details, carts)
    products = [(str(i).encode(), encode_product(Product(str(i), f"P{i}", Decimal(i), i)))
                for i in range(1, 21)]
    produce(cfg.kafka_bootstrap, cfg.topic_products, [*products, (b"7", None)])


def snapshot(cfg: Config) -> dict[str, object]:
    """Everything the read models hold (timestamps set by the database excluded)."""
    client = redis.Redis.from_url(cfg.redis_url)
    keys = sorted(client.scan_iter(match=f"{cfg.key_prefix}*", count=1000))
    out: dict[str, object] = {
        "redis": {k: (client.hgetall(k) if client.type(k) == b"hash" else client.get(k))
                  for k in keys}}
    with psycopg.connect(cfg.database_url) as conn:
        out["carts"] = conn.execute("SELECT * FROM carts ORDER BY cart_id").fetchall()
        out["lines"] = conn.execute("SELECT * FROM cart_lines ORDER BY 1, 2").fetchall()
        out["products"] = conn.execute(
            "SELECT product_id, product_name, price, stock_qty, deleted, source_offset "
            "FROM products ORDER BY 1").fetchall()
    return out


def wipe(cfg: Config) -> None:
    client = redis.Redis.from_url(cfg.redis_url)
    for k in client.scan_iter(match=f"{cfg.key_prefix}*", count=1000):
        client.delete(k)
    with psycopg.connect(cfg.database_url) as conn:
        conn.execute("TRUNCATE carts, cart_lines, customers, products")


def test_replay_into_empty_stores_equals_the_live_run(cfg, unique) -> None:
    history(cfg, unique)
    for name in ("catalog", "redis", "postgres"):
        drain(cfg, name)
    live = snapshot(cfg)
    assert len(live["carts"]) == 60 and len(live["products"]) == 20
    wipe(cfg)
    result = cartstream("replay", "--quiet", config=cfg)
    assert result.exit_code == 0, result.output
    assert snapshot(cfg) == live
    out = result.stdout
    assert "replay summary:" in out and "1 dead-lettered" in out
    for name in ("redis", "postgres", "catalog"):  # the sinks carry on from the end
        assert committed(cfg.kafka_bootstrap, cfg.group(name), cfg.topic_of(name)) == {
            p: e for p, e in end_offsets(cfg.kafka_bootstrap, cfg.topic_of(name)).items()}


def test_replay_onto_current_stores_changes_nothing(cfg, unique) -> None:
    history(cfg, unique)
    for name in ("catalog", "redis", "postgres"):
        drain(cfg, name)
    live = snapshot(cfg)
    # The sinks of this history (the reservations sink reads the aggregator's own topic).
    results = {s: replay.replay_sink(cfg, s, show_progress=False)
               for s in ("redis", "postgres", "catalog")}
    assert snapshot(cfg) == live
    assert {s: r.written for s, r in results.items()} == {"redis": 0, "postgres": 0,
                                                           "catalog": 0}
    assert results["redis"].records == 151 and results["catalog"].records == 21


def test_replay_refuses_while_a_sink_runs(cfg, unique) -> None:
    produce(cfg.kafka_bootstrap, cfg.topic_cart_details,
            [(b"a", encode_cart_details(cart("a" + unique, 1)))])
    stopper = Stopper()
    thread = threading.Thread(target=run, kwargs=dict(
        bootstrap=cfg.kafka_bootstrap, topic=cfg.topic_cart_details, group=cfg.group("redis"),
        store=build_sink("redis", cfg),
        dead_letters=DeadLetters(cfg.kafka_bootstrap, cfg.topic_dead_letter, "t"),
        stopper=stopper))
    thread.start()
    try:
        client = redis.Redis.from_url(cfg.redis_url)
        wait_until(lambda: client.hexists(cart_key(f"a{unique}", cfg.key_prefix), "doc"), 30,
                   "the sink to run")
        with pytest.raises(replay.GroupActive):
            replay.replay_sink(cfg, "redis", show_progress=False)
        (cfg.recovery_dir / "x").parent.mkdir(parents=True)
        result = cartstream("replay", "--quiet", "--from-events", config=cfg)
        assert result.exit_code == 2
        err = result.stderr
        assert f"consumer group {cfg.group('redis')} has 1 active member" in err
        assert "stop the redis sink first" in err
        assert cfg.recovery_dir.exists()  # refused before touching anything
    finally:
        stopper.stop()
        thread.join(30)


@pytest.mark.parametrize("command", [["cartstream", "aggregate"], ["cart_aggregator"]])
def test_from_events_deletes_the_aggregator_state_only_when_it_is_stopped(
        cfg, command: list[str]) -> None:
    cfg.recovery_dir.mkdir(parents=True)
    (cfg.recovery_dir / "part-0.sqlite3").write_text("state")
    # Something that looks like an aggregator working on this recovery directory.
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             *command, "-r", str(cfg.recovery_dir)])
    try:
        wait_until(lambda: replay.aggregator_processes(cfg) == [fake.pid], 10,
                   "the fake aggregator to show")
        result = cartstream("replay", "--quiet", "--from-events", "--sinks", "", config=cfg)
        assert result.exit_code == 2 and "the aggregator is running" in result.stderr
        assert cfg.recovery_dir.exists()
    finally:
        fake.kill()
        fake.wait()
    result = cartstream("replay", "--quiet", "--from-events", "--sinks", "", config=cfg)
    assert result.exit_code == 0, result.output
    assert not cfg.recovery_dir.exists()
    assert f"removed {cfg.recovery_dir}" in result.stdout


def test_the_pid_file_of_the_stack_counts_as_running(cfg) -> None:
    pids = Path(cfg.run_dir) / "pids"
    pids.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (pids / "aggregator.pid").write_text(f"{sleeper.pid}\n")
        assert sleeper.pid in replay.aggregator_processes(cfg)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert replay.aggregator_processes(cfg) == []


# ------------------------------------------------------------------ --from events


def events_config(cfg: Config, unique: str) -> Config:
    """`cfg` with its own cart-events and reservation topics (created), for a real aggregator."""
    names = {"topic_cart_events": f"c-{unique}-events",
             "topic_cart_reservations": f"c-{unique}-reservations",
             "topic_product_reservations": f"c-{unique}-reserved"}
    create_topics(cfg.kafka_bootstrap, {names["topic_cart_events"]: 3,
                                        names["topic_cart_reservations"]: 1,
                                        names["topic_product_reservations"]: 2})
    return cfg.replace(**names)


def event_history(cfg: Config, unique: str) -> dict[str, int]:
    """A catalog and carts' events (adds, removes, checkouts, a new cart after a checkout, an
    unknown product, a bad record); returns each customer's number of events."""
    products = [Product(str(i), f"P{i}", Decimal(f"{i}.25"), 1000) for i in range(1, 6)]
    produce(cfg.kafka_bootstrap, cfg.topic_products,
            [(p.product_id.encode(), encode_product(p)) for p in products])
    rng = random.Random(5)
    events: list[CartEvent] = []
    for i in range(12):
        c = f"e{unique}-{i}"
        events.append(new_cart_event(EventType.ITEM_ADDED, c, "1", 2))
        for _ in range(rng.randint(1, 6)):
            kind = rng.choice([EventType.ITEM_ADDED, EventType.ITEM_ADDED, EventType.ITEM_REMOVED])
            events.append(new_cart_event(kind, c, str(rng.randint(1, 5)),
                                         rng.randint(1, 3) if kind is EventType.ITEM_ADDED
                                         else None))
        if i % 3 == 0:  # an order, then a new cart
            events.append(new_cart_event(EventType.CHECKOUT, c))
            events.append(new_cart_event(EventType.ITEM_ADDED, c, "2", 1))
    events.append(new_cart_event(EventType.ITEM_ADDED, f"e{unique}-0", "999", 1))  # unknown
    produce(cfg.kafka_bootstrap, cfg.topic_cart_events,
            [(e.customer_id.encode(), encode_cart_event(e)) for e in events]
            + [(f"e{unique}-1".encode(), b"not an event")])
    counts: dict[str, int] = {}
    for e in events:
        counts[e.customer_id] = counts.get(e.customer_id, 0) + 1
    return counts


def cart_versions(cfg: Config) -> dict[str, int]:
    """customerId -> version, from Redis and from PostgreSQL `customers` (they must agree)."""
    client = redis.Redis.from_url(cfg.redis_url)
    in_redis = {}
    for key in client.scan_iter(match=f"{cfg.key_prefix}cart:*", count=1000):
        in_redis[key.decode().rsplit(":", 1)[1]] = int(client.hget(key, "v"))
    with psycopg.connect(cfg.database_url) as conn:
        in_pg = dict(conn.execute("SELECT customer_id, version FROM customers").fetchall())
    assert in_redis == in_pg
    return in_pg


# An add waits AGG_PRODUCT_WAIT_S (wall clock) for its product before UNKNOWN_PRODUCT: long
# enough that the products topic, read from the start, is in before any known product's add
# gives up (at 2 s a slow first read of it made two replays differ); short because every
# replay waits it out for the history's unknown product (30 s made this file ~5x slower).
AGG_ENV = {"AGG_METRICS_PORT": "0", "AGG_PRODUCT_WAIT_S": "10", "AGG_PROCESSES": "1"}


def test_from_events_refolds_the_log_and_brings_back_a_lost_cart(cfg, unique, caplog) -> None:
    caplog.set_level(logging.INFO, "cartstream.progress")
    cfg = events_config(cfg, unique)
    counts = event_history(cfg, unique)
    result = cartstream("replay", "--from", "events", "--sinks", "redis,postgres", config=cfg,
                        env=AGG_ENV)
    assert result.exit_code == 0, result.output
    # Every customer's record of its last event is stored, in both stores.
    assert cart_versions(cfg) == counts
    first = snapshot(cfg)
    assert len(first["carts"]) == 12 + 4  # 4 orders and their customers' new carts
    out = result.stdout
    assert "replay summary:" in out and "aggregator" in out
    assert "replay from events: done" in caplog.text  # the progress summary line
    details_end = end_offsets(cfg.kafka_bootstrap, cfg.topic_cart_details)
    for name in ("redis", "postgres"):  # the sinks carry on from the end of the new records
        # A partition no customer hashed to may hold offset 0 or nothing (-1001): both mean 0.
        done = committed(cfg.kafka_bootstrap, cfg.group(name), cfg.topic_cart_details)
        assert {p: max(o, 0) for p, o in done.items()} == details_end

    # The records are gone from cart-details-event (a new, empty topic) and from both stores.
    lost = cfg.replace(topic_cart_details=f"c-{unique}-details2")
    create_topics(cfg.kafka_bootstrap, {lost.topic_cart_details: 3})
    wipe(lost)
    assert cart_versions(lost) == {}
    result = cartstream("replay", "--from-events", "--sinks", "redis,postgres", config=lost,
                        env=AGG_ENV)
    assert result.exit_code == 0, result.output
    assert snapshot(lost)["carts"] == first["carts"] and cart_versions(lost) == counts
    assert snapshot(lost)["lines"] == first["lines"]


def test_from_events_refuses_a_running_aggregator_and_stops_the_one_it_started(
        cfg, unique) -> None:
    cfg = events_config(cfg, unique)
    event_history(cfg, unique)
    cfg.recovery_dir.mkdir(parents=True)
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "cartstream", "aggregate", "-r", str(cfg.recovery_dir)])
    try:
        wait_until(lambda: replay.aggregator_processes(cfg) == [fake.pid], 10,
                   "the fake aggregator to show")
        result = cartstream("replay", "--quiet", "--from", "events", config=cfg, env=AGG_ENV)
        assert result.exit_code == 2 and "the aggregator is running" in result.stderr
    finally:
        fake.kill()
        fake.wait()
    result = cartstream("replay", "--quiet", "--from", "events", config=cfg, env=AGG_ENV)
    assert result.exit_code == 0, result.output
    assert replay.aggregator_processes(cfg) == []  # the replay's own aggregator is stopped
    assert cfg.recovery_dir.exists()  # with its state: it resumes from there
