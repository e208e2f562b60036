"""Connectors: a store goes down and comes back; the sink waits, retries and catches up.

Each test runs a private server of its own (the shared ones serve other engineers), kills it
while records keep arriving, and starts it again on the same port and data.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time

import psycopg
import pytest
import redis

from cart_contract import encode_cart_details
from cart_contract.layout import cart_key
from connectors.config import Config
from connectors.consumer import DeadLetters, Stopper, run
from connectors.service import build_sink
from tests.support.connectors import (
    PrivatePostgres,
    PrivateRedis,
    cart,
    committed,
    end_offsets,
    private_config,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration


def wave(customers: list[str], version: int) -> list[tuple[bytes, bytes]]:
    return [(c.encode(), encode_cart_details(cart(c, version, qty=version))) for c in customers]


def caught_up(cfg: Config, name: str) -> bool:
    ends = end_offsets(cfg.kafka_bootstrap, cfg.topic_of(name))
    got = committed(cfg.kafka_bootstrap, cfg.group(name), cfg.topic_of(name))
    return all(got[p] == e for p, e in ends.items() if e)


def run_in_thread(cfg: Config, name: str) -> tuple[threading.Thread, Stopper]:
    stopper = Stopper()
    thread = threading.Thread(target=run, kwargs=dict(
        bootstrap=cfg.kafka_bootstrap, topic=cfg.topic_of(name), group=cfg.group(name),
        store=build_sink(name, cfg),
        dead_letters=DeadLetters(cfg.kafka_bootstrap, cfg.topic_dead_letter, "t"),
        stopper=stopper, batch_wait_s=0.05, max_backoff_s=0.5), daemon=True)
    thread.start()
    return thread, stopper


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_outage_waits_and_catches_up(kafka_bootstrap, database_url, unique, tmp_path,
                                           caplog) -> None:
    caplog.set_level(logging.INFO, logger="connectors")
    with PrivateRedis(tmp_path / "redis") as server:
        cfg = private_config(kafka_bootstrap, server.url, database_url, unique)
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        customers = [f"o{unique}-{i}" for i in range(30)]
        thread, stopper = run_in_thread(cfg, "redis")
        try:
            produce(kafka_bootstrap, cfg.topic_cart_details, wave(customers, 1))
            wait_until(lambda: caught_up(cfg, "redis"), 30, "the first wave")
            server.kill()
            produce(kafka_bootstrap, cfg.topic_cart_details, wave(customers, 2))
            wait_until(lambda: "store write" in caplog.text and "failed" in caplog.text, 30,
                       "the sink to notice the outage")
            time.sleep(1)  # a few retries against the dead server
            assert not caught_up(cfg, "redis")  # nothing committed while the store is down
            server.start()  # empty: no AOF was fsynced by the kill, scripts are gone too
            wait_until(lambda: caught_up(cfg, "redis"), 30, "the sink to catch up")
            for c in customers:
                assert client.hget(cart_key(c, cfg.key_prefix), "v") == b"2"
            assert "succeeded after" in caplog.text
        finally:
            stopper.stop()
            thread.join(30)


@pytest.mark.skipif(not PrivatePostgres.available(), reason="needs PostgreSQL 15 and root")
def test_postgres_outage_waits_and_catches_up(kafka_bootstrap, redis_url, unique,
                                              caplog) -> None:
    caplog.set_level(logging.INFO, logger="connectors")
    with PrivatePostgres() as server:
        cfg = private_config(kafka_bootstrap, redis_url, server.url, unique)
        customers = [f"q{unique}-{i}" for i in range(30)]
        thread, stopper = run_in_thread(cfg, "postgres")

        def versions() -> list[tuple[int, int]]:
            with psycopg.connect(server.url, connect_timeout=2) as conn:
                return conn.execute("SELECT version, count(*) FROM carts GROUP BY 1").fetchall()

        try:
            produce(kafka_bootstrap, cfg.topic_cart_details, wave(customers, 1))
            wait_until(lambda: caught_up(cfg, "postgres"), 30, "the first wave")
            assert versions() == [(1, 30)]
            server.stop(signal.SIGKILL)  # a crash, not a polite shutdown
            produce(kafka_bootstrap, cfg.topic_cart_details, wave(customers, 2))
            wait_until(lambda: "store write" in caplog.text and "failed" in caplog.text, 30,
                       "the sink to notice the outage")
            time.sleep(1)
            assert not caught_up(cfg, "postgres")
            server.start()
            wait_until(lambda: caught_up(cfg, "postgres"), 60, "the sink to catch up")
            assert versions() == [(2, 30)]
            assert "succeeded after" in caplog.text
        finally:
            stopper.stop()
            thread.join(30)


def test_a_database_that_is_not_there_yet(kafka_bootstrap, redis_url, database_url,
                                          unique) -> None:
    """Started before its database exists, the sink waits for it and migrates it."""
    cfg = private_config(kafka_bootstrap, redis_url, database_url, unique)
    cfg = cfg.replace(database_url=database_url.rsplit("/", 1)[0] + f"/late_{unique}")
    produce(kafka_bootstrap, cfg.topic_cart_details, wave([f"l{unique}"], 1))
    thread, stopper = run_in_thread(cfg, "postgres")
    try:
        time.sleep(1.5)
        assert not caught_up(cfg, "postgres")
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "late_{unique}"')
        wait_until(lambda: caught_up(cfg, "postgres"), 30, "the sink to catch up")
        with psycopg.connect(cfg.database_url) as conn:
            assert conn.execute("SELECT count(*) FROM carts").fetchone() == (1,)
    finally:
        stopper.stop()
        thread.join(30)
