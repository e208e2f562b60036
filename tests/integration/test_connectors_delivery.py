"""Connectors on real Kafka: crash before commit, poison, rebalances, the sink processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis

from cart_contract import decode_cart_details, decode_dead_letter, encode_cart_details
from cart_contract.layout import cart_key
from connectors.config import Config
from connectors.consumer import DeadLetters, Stopper, run
from connectors.migrate import migrate
from connectors.sinks import PostgresCartWriter, RedisCartWriter
from tests.support.connectors import (
    cart,
    committed,
    drain,
    end_offsets,
    fresh_database,
    private_config,
    produce,
    read_topic,
    wait_until,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(kafka_bootstrap, redis_url, database_url, unique) -> Config:
    db = fresh_database(database_url, f"test_{unique}")
    with psycopg.connect(db, autocommit=True) as conn:
        migrate(conn)
    return private_config(kafka_bootstrap, redis_url, db, unique, partitions=4)


def records(customers: list[str], versions: range) -> list[tuple[bytes, bytes]]:
    return [(c.encode(), encode_cart_details(cart(c, v, qty=v, lines=1 + v % 2)))
            for v in versions for c in customers]


def start(cfg: Config, name: str, sink: Any) -> tuple[threading.Thread, Stopper]:
    stopper = Stopper()
    thread = threading.Thread(target=run, kwargs=dict(
        bootstrap=cfg.kafka_bootstrap, topic=cfg.topic_of(name), group=cfg.group(name),
        store=sink, dead_letters=DeadLetters(cfg.kafka_bootstrap, cfg.topic_dead_letter, "t"),
        stopper=stopper, batch_max=50, batch_wait_s=0.05, max_backoff_s=0.5), daemon=True)
    thread.start()
    return thread, stopper


def all_committed(cfg: Config, name: str) -> bool:
    ends = end_offsets(cfg.kafka_bootstrap, cfg.topic_of(name))
    got = committed(cfg.kafka_bootstrap, cfg.group(name), cfg.topic_of(name))
    return all(got[p] == end for p, end in ends.items() if end > 0)


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs."""


def test_crash_between_store_write_and_commit_loses_and_doubles_nothing(cfg, unique) -> None:
    customers = [f"x{unique}-{i}" for i in range(20)]
    produce(cfg.kafka_bootstrap, cfg.topic_cart_details, records(customers, range(1, 6)))
    client = redis.Redis.from_url(cfg.redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(cfg.updates_channel)
    pubsub.get_message(timeout=2)
    redis_sink = RedisCartWriter(client, cfg.updates_channel, cfg.key_prefix)
    pg_sink = PostgresCartWriter(cfg.database_url)
    for name, sink in (("redis", redis_sink), ("postgres", pg_sink)):
        def crash_after_store(batch: Any, sink: Any = sink) -> list:
            sink(batch)
            raise Crash  # stored, but the offsets are never committed

        with pytest.raises(Crash):
            run(bootstrap=cfg.kafka_bootstrap, topic=cfg.topic_cart_details,
                group=cfg.group(name), store=crash_after_store,
                dead_letters=DeadLetters(cfg.kafka_bootstrap, cfg.topic_dead_letter, "t"),
                stopper=Stopper())
        assert sink.written > 0
        assert all(o < 0 for o in committed(cfg.kafka_bootstrap, cfg.group(name),
                                            cfg.topic_cart_details).values())
        drain(cfg, name, sink)  # the restart: everything is read again
        assert all_committed(cfg, name)
    for c in customers:
        doc = decode_cart_details(client.hget(cart_key(c, cfg.key_prefix), "doc"))
        assert (doc.version, doc.total_qty, len(doc.line_items)) == (5, 10, 2)
    with psycopg.connect(cfg.database_url) as conn:
        got = conn.execute("SELECT version, count(*) FROM carts GROUP BY 1").fetchall()
        n_lines = conn.execute("SELECT count(*) FROM cart_lines").fetchone()[0]
    assert got == [(5, 20)] and n_lines == 20 * 2
    # Re-applying after the crash published nothing twice: the guard refused the repeats.
    client.publish(cfg.updates_channel, b"end")
    notes = []
    while (m := pubsub.get_message(timeout=5)) is not None and m["data"] != b"end":
        n = orjson.loads(m["data"])
        notes.append((n["customerId"], n["version"]))
    assert notes and max(Counter(notes).values()) == 1
    pg_sink.db.close()


def test_poison_is_dead_lettered_and_the_sink_keeps_going(cfg, unique) -> None:
    good = records([f"p{unique}-{i}" for i in range(3)], range(1, 2))
    produce(cfg.kafka_bootstrap, cfg.topic_cart_details,
            [good[0], (b"bad", b"{definitely not json"), good[1], (b"t", None), good[2]],
            partition=0)
    sink = drain(cfg, "redis")
    assert sink.written == 3
    assert all_committed(cfg, "redis")
    letters = [decode_dead_letter(m.value())
               for m in read_topic(cfg.kafka_bootstrap, cfg.topic_dead_letter, 2)]
    assert [(d.reason, d.offset, d.value, d.stage) for d in letters] == [
        ("INVALID_JSON", 1, b"{definitely not json", "test"), ("TOMBSTONE", 3, None, "test")]
    assert letters[0].source_topic == cfg.topic_cart_details


def test_a_rebalance_loses_nothing(cfg, unique) -> None:
    customers = [f"r{unique}-{i}" for i in range(40)]
    client = redis.Redis.from_url(cfg.redis_url)
    sink_a = RedisCartWriter(client, cfg.updates_channel, cfg.key_prefix)
    sink_b = RedisCartWriter(client, cfg.updates_channel, cfg.key_prefix)
    thread_a, stop_a = start(cfg, "redis", sink_a)
    produce(cfg.kafka_bootstrap, cfg.topic_cart_details, records(customers, range(1, 4)))
    wait_until(lambda: all_committed(cfg, "redis"), 60, "the first sink to catch up")
    thread_b, stop_b = start(cfg, "redis", sink_b)  # joins: the partitions are shared out
    produce(cfg.kafka_bootstrap, cfg.topic_cart_details, records(customers, range(4, 7)))
    wait_until(lambda: all_committed(cfg, "redis"), 60, "both sinks to catch up")
    stop_a.stop()  # leaves: everything moves to b
    thread_a.join(30)
    produce(cfg.kafka_bootstrap, cfg.topic_cart_details, records(customers, range(7, 10)))
    wait_until(lambda: all_committed(cfg, "redis"), 60, "the second sink to take over")
    stop_b.stop()
    thread_b.join(30)
    assert not thread_a.is_alive() and not thread_b.is_alive()
    assert sink_b.written > 0
    pipe = client.pipeline()
    for c in customers:
        pipe.hget(cart_key(c, cfg.key_prefix), "v")
    assert pipe.execute() == [b"9"] * len(customers)


def test_the_sink_process_stores_commits_and_stops_on_sigterm(cfg, unique) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP": cfg.kafka_bootstrap, "REDIS_URL": cfg.redis_url,
           "DATABASE_URL": cfg.database_url, "TOPIC_CART_DETAILS": cfg.topic_cart_details,
           "TOPIC_DEAD_LETTER": cfg.topic_dead_letter, "CONSUMER_GROUP_PREFIX": cfg.group_prefix,
           "REDIS_KEY_PREFIX": cfg.key_prefix, "CART_UPDATES_CHANNEL": cfg.updates_channel}
    procs = {name: subprocess.Popen([sys.executable, "-m", "cartstream", "sink", name],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
             for name in ("redis", "postgres")}
    try:
        customers = [f"s{unique}-{i}" for i in range(10)]
        produce(cfg.kafka_bootstrap, cfg.topic_cart_details, records(customers, range(1, 3)))
        client = redis.Redis.from_url(cfg.redis_url)
        wait_until(lambda: all(client.hget(cart_key(c, cfg.key_prefix), "v") == b"2"
                               for c in customers), 60, "the redis sink")

        def in_postgres() -> bool:
            with psycopg.connect(cfg.database_url) as conn:
                return conn.execute("SELECT count(*) FROM carts WHERE version = 2"
                                    ).fetchone() == (10,)

        wait_until(in_postgres, 60, "the postgres sink")
        wait_until(lambda: all_committed(cfg, "redis") and all_committed(cfg, "postgres"), 30,
                   "both sinks to commit")
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        outputs = {name: p.communicate(timeout=30)[0].decode() for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outputs[name]
        assert f"{name} sink stopped" in outputs[name]
