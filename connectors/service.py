"""Run one sink as a long-lived process (what `cartstream sink NAME` does)."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import redis

from connectors.config import SINKS, Config
from connectors.consumer import (
    BatchDone,
    DeadLetters,
    Stopper,
    run,
    setup_logging,
    tune_gc,
    with_retry,
)
from connectors.sinks import (
    CatalogWriter,
    PostgresCartWriter,
    RedisCartWriter,
    ReservationWriter,
    StoreWriter,
)

log = logging.getLogger("connectors")


def build_sink(name: str, cfg: Config) -> StoreWriter:
    """The writer of the sink called `name` (`redis`, `postgres` or `catalog`), on its stores."""
    if name not in SINKS:
        raise ValueError(f"unknown sink {name!r}; choose from {', '.join(SINKS)}")
    if name == "postgres":
        return PostgresCartWriter(cfg.database_url)
    if name == "reservations":
        return ReservationWriter(cfg.database_url)
    client = redis.Redis.from_url(cfg.redis_url, socket_timeout=5, socket_connect_timeout=2)
    if name == "redis":
        return RedisCartWriter(client, cfg.updates_channel, cfg.key_prefix)
    return CatalogWriter(client, cfg.database_url, cfg.key_prefix)


class ProgressLog:
    """Logs how many records were stored, at most every `every_s` seconds."""

    def __init__(self, name: str, every_s: float = 10.0) -> None:
        self.name, self.every_s = name, every_s
        self.records = self.poison = 0
        self._since, self._last = 0, time.monotonic()

    def __call__(self, done: BatchDone) -> None:
        """Count one stored batch."""
        self.records += done.records
        self.poison += done.poison
        self._since += done.records
        now = time.monotonic()
        if now - self._last >= self.every_s:
            log.info("%s sink: %d records stored (%.0f/s lately), %d dead-lettered", self.name,
                     self.records, self._since / (now - self._last), self.poison)
            self._since, self._last = 0, now


class CatalogRestorer(threading.Thread):
    """Every `every_s`, puts the catalog back into a Redis that restarted empty."""

    def __init__(self, sink: CatalogWriter, stopper: Stopper, every_s: float = 5.0) -> None:
        super().__init__(name="catalog-restorer", daemon=True)
        self.sink, self.stopper, self.every_s = sink, stopper, every_s

    def run(self) -> None:
        """Check until the sink stops; store trouble is logged and tried again next time."""
        while not self.stopper.event.wait(self.every_s):
            try:
                restored = self.sink.restore_redis()
            except (redis.RedisError, psycopg.Error) as exc:
                log.debug("catalog check skipped: %s", exc)
                continue
            if restored is not None:
                log.warning("catalog view was missing from Redis (restarted empty?): "
                            "restored %d products from PostgreSQL", restored)


def main(name: str, config: Config | None = None, stopper: Stopper | None = None) -> None:
    """Run the named sink until SIGTERM/SIGINT (or until `stopper` is set)."""
    setup_logging()
    cfg = config or Config.from_env_or_exit()
    sink = build_sink(name, cfg)
    tune_gc()
    stopper = stopper or Stopper().install()
    log.info("%s sink starting: topic %s, group %s", name, cfg.topic_of(name), cfg.group(name))
    db = getattr(sink, "db", None)
    # Migrate at start, not at the first record: the read API needs the tables before any cart
    # lands. A database that is not up yet is waited for, like any store outage.
    if db is not None and with_retry(lambda: db.connection() and [], "schema migration",
                                     stopper, cfg.retry_max_s) is None:
        return
    if isinstance(sink, CatalogWriter):
        CatalogRestorer(sink, stopper).start()
    progress = ProgressLog(name)
    observed = None
    if cfg.metrics_port(name):
        from connectors import metrics

        observed = metrics.start(
            name, cfg.metrics_host, cfg.metrics_port(name),
            metrics.kafka_offsets(cfg.kafka_client(), cfg.topic_of(name), cfg.group(name)),
            max_lag=cfg.ready_max_lag, interval_s=cfg.lag_interval_s, stopped=stopper.event)

    def on_batch(done: BatchDone) -> None:
        progress(done)
        if observed is not None:
            observed.on_batch(done)

    run(bootstrap=cfg.kafka_client(), topic=cfg.topic_of(name), group=cfg.group(name),
        store=sink, dead_letters=DeadLetters(cfg.kafka_client(), cfg.topic_dead_letter,
                                             f"sink-{name}"),
        stopper=stopper, batch_max=cfg.batch_max, batch_wait_s=cfg.batch_wait_s,
        max_backoff_s=cfg.retry_max_s, on_batch=on_batch,
        on_assignment=observed.on_assignment if observed is not None else None)
    log.info("%s sink stopped", name)
