"""Connectors against real Kafka, Redis and PostgreSQL: guards, crashes, outages, migrations."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cart_contract import (
    CartDetails,
    EventPosition,
    LineItem,
    decode_cart_details,
    decode_dead_letter,
    encode_cart_details,
)
from cart_contract.layout import cart_key
from cart_contract.redis_carts import RedisCarts
from connectors import catalog as catalog_cli
from connectors.config import Config
from connectors.consumer import DeadLetters, Stopper, run
from connectors.migrate import migrate, migrations
from connectors.replay import GroupActive, replay_sink
from connectors.sinks import PostgresCartWriter, RedisCartWriter
from tests.support.cli import cartstream
from tests.support.connectors import upsert_carts
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def cart(customer: str, version: int, generation: int = 1, qty: int = 1,
         status: str = "OPEN") -> CartDetails:
    price = Decimal("10.50")
    lines = (LineItem("1", "Thing", qty, price, price * qty),)
    return CartDetails(customer, f"{customer}:{generation}", status, lines, qty, price * qty,
                       version, EventPosition(str(uuid.uuid4()), 0, version * 10), (),
                       "2026-11-22T10:00:00Z")


@pytest.fixture
def fresh_db(database_url: str, unique: str) -> str:
    """A new, empty database on the shared server."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "conn_{unique}"')
    return database_url.rsplit("/", 1)[0] + f"/conn_{unique}"


@pytest.fixture
def topics(kafka_bootstrap: str, unique: str) -> dict[str, str]:
    names = {"details": f"c-{unique}-details", "products": f"c-{unique}-products",
             "dead": f"c-{unique}-dead"}
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.create_topics([NewTopic(n, 2, 1) for n in names.values()]).values():
        fut.result(timeout=30)
    return names


def config(kafka_bootstrap, redis_url, db, topics, unique) -> Config:
    return Config(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, database_url=db,
                  topic_cart_details=topics["details"], topic_products=topics["products"],
                  topic_dead_letter=topics["dead"], group_prefix=f"t-{unique}")


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for k, v in records:
        p.produce(topic, v, k)
    assert p.flush(30) == 0


def consume_until(bootstrap, topic, group, store, until_count, stopper=None, **kw):
    """Run the sink loop in a thread until the store saw `until_count` records."""
    seen = [0]
    stopper = stopper or Stopper()

    def counting(batch):
        out = store(batch)
        seen[0] += len(batch)
        if seen[0] >= until_count:
            stopper.event.set()
        return out

    run(bootstrap=bootstrap, topic=topic, group=group, store=counting,
        dead_letters=DeadLetters(bootstrap, kw.pop("dead", topic + "-dead"), "test"),
        stopper=stopper, batch_max=100, **kw)
    return seen[0]


# ------------------------------------------------------------------ version guards

@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.permutations(list(range(1, 9))), st.integers(0, 3))
def test_redis_keeps_the_highest_version_in_any_order(redis_url, order, dup) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisCarts(client)
    customer = f"g-{uuid.uuid4().hex[:10]}"
    for v in [*order, *order[:dup]]:  # duplicates too
        store.put_many([cart(customer, v, qty=v)], notify=False)
    stored = decode_cart_details(client.hget(cart_key(customer), "doc"))
    assert (stored.version, stored.total_qty) == (8, 8)


def test_redis_write_publishes_a_notification_only_when_applied(redis_url, unique) -> None:
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    channel = f"test-updates-{unique}"
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=2)  # the subscribe confirmation
    store = RedisCarts(client, channel)
    assert store.put_many([cart(unique, 2)]) == 1
    assert store.put_many([cart(unique, 1)]) == 0
    msgs = []
    for _ in range(10):
        m = pubsub.get_message(timeout=0.2)
        if m and m["type"] == "message":
            msgs.append(m["data"])
    assert len(msgs) == 1 and b'"version":2' in msgs[0]


def test_postgres_keeps_the_highest_version_and_order_history(fresh_db, unique) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrate(conn)
        upsert_carts(conn, [cart(unique, 3, qty=3), cart(unique, 1, qty=1)])
        upsert_carts(conn, [cart(unique, 2, qty=2)])  # older: ignored
        upsert_carts(conn, [cart(unique, 4, qty=4, status="CHECKED_OUT"),
                            cart(unique, 5, generation=2, qty=5)])
        rows = conn.execute("SELECT cart_id, version, status, total_qty FROM carts "
                            "WHERE customer_id = %s ORDER BY generation", (unique,)).fetchall()
        lines = conn.execute("SELECT cart_id, qty FROM cart_lines WHERE cart_id LIKE %s "
                             "ORDER BY cart_id", (f"{unique}:%",)).fetchall()
    assert rows == [(f"{unique}:1", 4, "CHECKED_OUT", 4), (f"{unique}:2", 5, "OPEN", 5)]
    assert lines == [(f"{unique}:1", 4), (f"{unique}:2", 5)]


# ------------------------------------------------------------------ migrations

def test_migrations_on_empty_and_existing_databases(fresh_db) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert migrate(conn) == [v for v, _ in migrations()]
        assert migrate(conn) == []
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"carts", "cart_lines", "products", "schema_migrations"} <= tables


def test_concurrent_migrations_do_not_race(fresh_db) -> None:
    results: list[list[int]] = []

    def go() -> None:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            results.append(migrate(conn))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [[], [], [], [v for v, _ in migrations()]]


# ------------------------------------------------------------------ at-least-once

class Crash(BaseException):
    """Stands for kill -9: nothing after it runs."""


def test_crash_between_store_write_and_commit_loses_and_doubles_nothing(
        kafka_bootstrap, redis_url, topics, unique) -> None:
    customers = [f"x{unique}-{i}" for i in range(20)]
    records = [(c.encode(), encode_cart_details(cart(c, v, qty=v)))
               for v in range(1, 6) for c in customers]
    produce(kafka_bootstrap, topics["details"], records)
    client = redis.Redis.from_url(redis_url)
    sink = RedisCartWriter(client, "unused")
    stored = [0]

    def crash_after_store(batch):
        sink(batch)
        stored[0] += len(batch)
        raise Crash  # written, but the offsets were never committed

    group = f"t-{unique}"
    with pytest.raises(Crash):
        run(bootstrap=kafka_bootstrap, topic=topics["details"], group=group,
            store=crash_after_store, dead_letters=DeadLetters(kafka_bootstrap, topics["dead"], "t"),
            stopper=Stopper())
    assert stored[0] > 0
    seen = consume_until(kafka_bootstrap, topics["details"], group, sink, len(records),
                         dead=topics["dead"])
    assert seen == len(records)  # everything came again: nothing was committed before the crash
    for c in customers:
        doc = decode_cart_details(client.hget(cart_key(c), "doc"))
        assert (doc.version, doc.total_qty) == (5, 5)


def test_poison_goes_to_dead_letters_and_good_records_around_it_land(
        kafka_bootstrap, redis_url, topics, unique) -> None:
    client = redis.Redis.from_url(redis_url)
    produce(kafka_bootstrap, topics["details"], [
        (b"p1", encode_cart_details(cart(f"p1{unique}", 1))),
        (b"p2", b"{definitely not json"),
        (b"p3", encode_cart_details(cart(f"p3{unique}", 1))),
    ])
    consume_until(kafka_bootstrap, topics["details"], f"t-{unique}",
                  RedisCartWriter(client, "unused"), 3, dead=topics["dead"])
    assert client.hexists(cart_key(f"p1{unique}"), "doc")
    assert client.hexists(cart_key(f"p3{unique}"), "doc")
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"d-{unique}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topics["dead"]])
    msg = None
    for _ in range(40):
        msg = c.poll(0.5)
        if msg is not None and msg.error() is None:
            break
    c.close()
    letter = decode_dead_letter(msg.value())
    assert (letter.reason, letter.value) == ("INVALID_JSON", b"{definitely not json")


# ------------------------------------------------------------------ outages


def _start_redis(port: int, data: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(data), "--appendonly", "yes", "--save", ""],
                            stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("private redis did not start")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_outage_waits_and_catches_up(kafka_bootstrap, topics, unique, tmp_path) -> None:
    port = free_port()
    server = _start_redis(port, tmp_path)
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)
    customers = [f"o{unique}-{i}" for i in range(30)]
    stopper = Stopper()
    total = len(customers) * 2
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(consume_until(
        kafka_bootstrap, topics["details"], f"t-{unique}", RedisCartWriter(client, "unused"),
        total, stopper, dead=topics["dead"], max_backoff_s=0.5)))
    thread.start()
    try:
        produce(kafka_bootstrap, topics["details"],
                [(c.encode(), encode_cart_details(cart(c, 1))) for c in customers])
        time.sleep(2)
        server.kill()
        server.wait()
        produce(kafka_bootstrap, topics["details"],
                [(c.encode(), encode_cart_details(cart(c, 2, qty=2))) for c in customers])
        time.sleep(2)  # the sink is retrying against a dead server now
        server = _start_redis(port, tmp_path)
        thread.join(timeout=60)
        assert not thread.is_alive()
        for c in customers:
            assert decode_cart_details(client.hget(cart_key(c), "doc")).version == 2
    finally:
        stopper.event.set()
        server.kill()


# ------------------------------------------------------------------ catalog loader

def test_catalog_loader_loads_good_rows_and_reports_bad_ones(
        kafka_bootstrap, topics, unique, tmp_path) -> None:
    f = tmp_path / "catalog.txt"
    f.write_text(
        '1:{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}\n'
        '{"productId":"2","productName":"Samsung","price":55000,"stockQty":5}\n'
        '3:{"productId":"3","productName":"Bad","price":"abc","stockQty":1}\n'
        "\n"
        "garbage line\n"
    )
    env = {"KAFKA_BOOTSTRAP": kafka_bootstrap, "TOPIC_PRODUCTS": topics["products"]}
    assert cartstream("catalog", "load", str(f), "--dry-run", env=env).exit_code == 1
    loaded = cartstream("catalog", "load", str(f), env=env)
    assert loaded.exit_code == 1
    err = loaded.stderr
    assert f"{f}:3: INVALID_PRICE" in err and f"{f}:5:" in err
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"l-{unique}"})
    total = 0
    for p in range(2):
        low, high = c.get_watermark_offsets(TopicPartition(topics["products"], p), timeout=10)
        total += high - low
    c.close()
    assert total == 2  # the dry run produced nothing; the real load the two good rows


def test_catalog_loader_reads_csv(tmp_path) -> None:
    f = tmp_path / "c.csv"
    f.write_text("productId,productName,price,stockQty\n1,Phone,649.99,3\n2,Cable,x,1\n")
    rows = list(catalog_cli.parse_rows(f.read_text()))
    assert rows[0][1].price == Decimal("649.99") and rows[0][1].stock_qty == 3
    assert isinstance(rows[1][1], catalog_cli.BadRow) and rows[1][0] == 3


# ------------------------------------------------------------------ replay

def test_replay_rebuilds_the_same_read_model(kafka_bootstrap, redis_url, fresh_db, topics,
                                             unique) -> None:
    cfg = config(kafka_bootstrap, redis_url, fresh_db, topics, unique)
    customers = [f"r{unique}-{i}" for i in range(25)]
    records = [(c.encode(), encode_cart_details(replace(cart(c, v, qty=v))))
               for v in range(1, 4) for c in customers]
    produce(kafka_bootstrap, topics["details"], records)
    sink = PostgresCartWriter(fresh_db)
    consume_until(kafka_bootstrap, topics["details"], cfg.group("postgres"), sink, len(records),
                  dead=topics["dead"])
    query = "SELECT cart_id, version, total_qty, doc FROM carts ORDER BY cart_id"
    with psycopg.connect(fresh_db) as conn:
        live = conn.execute(query).fetchall()
        conn.execute("DELETE FROM carts WHERE cart_id LIKE %s", (f"r{unique}-1%",))
        conn.commit()
    result = replay_sink(cfg, "postgres", show_progress=False)
    assert result.records == len(records)
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute(query).fetchall() == live


def test_replay_refuses_while_the_sink_runs(kafka_bootstrap, redis_url, fresh_db, topics,
                                            unique) -> None:
    cfg = config(kafka_bootstrap, redis_url, fresh_db, topics, unique)
    produce(kafka_bootstrap, topics["details"],
            [(b"a", encode_cart_details(cart("a" + unique, 1)))])
    stopper = Stopper()
    client = redis.Redis.from_url(redis_url)
    thread = threading.Thread(target=run, kwargs=dict(
        bootstrap=kafka_bootstrap, topic=topics["details"], group=cfg.group("redis"),
        store=RedisCartWriter(client, "unused"),
        dead_letters=DeadLetters(kafka_bootstrap, topics["dead"], "t"), stopper=stopper))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not client.hexists(cart_key(f"a{unique}"), "doc"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with pytest.raises(GroupActive):
            replay_sink(cfg, "redis", show_progress=False)
    finally:
        stopper.event.set()
        thread.join(timeout=30)
