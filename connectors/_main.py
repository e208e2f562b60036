"""Start one sink process from its name."""

from __future__ import annotations

import logging
import time

import redis

from connectors.config import Config
from connectors.consumer import DeadLetters, Stopper, run, setup_logging, with_retry
from connectors.sinks import CatalogSink, PostgresCartSink, RedisCartSink

log = logging.getLogger("connectors")


def main(sink: str, config: Config | None = None) -> None:
    """Run the named sink (`redis`, `postgres` or `catalog`) until SIGTERM."""
    setup_logging()
    cfg = config or Config.from_env()
    client = redis.Redis.from_url(cfg.redis_url, socket_timeout=5, socket_connect_timeout=2)
    if sink == "redis":
        store, topic = RedisCartSink(client, cfg.updates_channel), cfg.topic_cart_details
    elif sink == "postgres":
        store, topic = PostgresCartSink(cfg.database_url), cfg.topic_cart_details
    elif sink == "catalog":
        store, topic = CatalogSink(client, cfg.database_url), cfg.topic_products
    else:
        raise SystemExit(f"unknown sink {sink!r}")
    stopper = Stopper().install()
    db = getattr(store, "db", None)
    if db is not None:
        # Migrate at start, not at the first record: readers need the tables before any cart lands.
        if with_retry(lambda: db.connection() and [], "schema migration", stopper,
                      cfg.retry_max_s) is None:
            return
    done = [0, time.monotonic()]

    def progress(n: int) -> None:
        done[0] += n
        if time.monotonic() - done[1] > 10:
            log.info("%s sink: %d records stored so far", sink, done[0])
            done[1] = time.monotonic()

    run(bootstrap=cfg.kafka_bootstrap, topic=topic, group=cfg.group(sink), store=store,
        dead_letters=DeadLetters(cfg.kafka_bootstrap, cfg.topic_dead_letter, f"sink-{sink}"),
        stopper=stopper, batch_max=cfg.batch_max, batch_wait_s=cfg.batch_wait_s,
        max_backoff_s=cfg.retry_max_s, on_batch=progress)
    log.info("%s sink stopped", sink)
