"""Rebuild the read models from the log.

    python -m connectors.replay [--sinks redis,postgres,catalog] [--from-events]

Stop the sinks first (`make down`, or kill the sink processes): Kafka refuses to move the
offsets of a group that has members, and this command says so. For each chosen sink it resets
the consumer group to the start of its topic, re-applies every record with the sink's own code
(the version guards make records already stored a no-op, so nothing is truncated), shows
progress and prints a summary. Afterwards `make up` starts the sinks where the replay ended.

--from-events also rebuilds the aggregator's state from `cart-events`: it deletes the
aggregator's recovery directory ($RUN_DIR/aggregator/recovery), so the aggregator must be
stopped too; when it starts again it re-reads the whole event log and re-emits every cart
record, which the sinks then see as repeats or as the missing versions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from tqdm import tqdm

from connectors.config import Config
from connectors.consumer import DeadLetters, Stopper, run, setup_logging
from connectors.sinks import CatalogSink, PostgresCartSink, RedisCartSink


@dataclass(frozen=True)
class ReplayResult:
    """What one sink's replay did."""

    sink: str
    records: int
    seconds: float


class GroupActive(RuntimeError):
    """The sink's consumer group still has members."""


def _topic_of(cfg: Config, sink: str) -> str:
    return cfg.topic_products if sink == "catalog" else cfg.topic_cart_details


def _store_of(cfg: Config, sink: str):
    client = redis.Redis.from_url(cfg.redis_url, socket_timeout=5)
    if sink == "redis":
        return RedisCartSink(client, cfg.updates_channel)
    if sink == "postgres":
        return PostgresCartSink(cfg.database_url)
    return CatalogSink(client, cfg.database_url)


def reset_group(cfg: Config, sink: str) -> dict[int, tuple[int, int]]:
    """Move the sink's group to the start of its topic; return partition -> (low, high)."""
    admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap})
    group = cfg.group(sink)
    desc = admin.describe_consumer_groups([group])[group].result(timeout=30)
    if desc.members:
        raise GroupActive(
            f"consumer group {group} has {len(desc.members)} active member(s): stop the "
            f"{sink} sink first (make down)"
        )
    topic = _topic_of(cfg, sink)
    probe = Consumer({"bootstrap.servers": cfg.kafka_bootstrap, "group.id": group,
                      "enable.auto.commit": False})
    parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
    marks = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
    probe.close()
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p, low) for p, (low, _) in marks.items()]
    )])[group].result(timeout=30)
    return marks


def replay_sink(cfg: Config, sink: str, show_progress: bool = True) -> ReplayResult:
    """Reset one sink's group and re-apply its whole topic; return what was done."""
    marks = reset_group(cfg, sink)
    until = {p: high for p, (low, high) in marks.items() if high > low}
    total = sum(high - low for low, high in marks.values())
    start = time.monotonic()
    if not until:
        return ReplayResult(sink, 0, 0.0)
    bar = tqdm(total=total, desc=f"replay {sink}", unit="rec", disable=not show_progress)
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        bar.update(n)

    run(bootstrap=cfg.kafka_bootstrap, topic=_topic_of(cfg, sink), group=cfg.group(sink),
        store=_store_of(cfg, sink),
        dead_letters=DeadLetters(cfg.kafka_bootstrap, cfg.topic_dead_letter, f"replay-{sink}"),
        stopper=Stopper().install(), batch_max=cfg.batch_max, on_batch=progress,
        until=until)
    bar.close()
    return ReplayResult(sink, done[0], time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m connectors.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sinks", default="redis,postgres,catalog")
    parser.add_argument("--from-events", action="store_true",
                        help="also reset the aggregator (it must be stopped)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    setup_logging()
    cfg = Config.from_env()
    sinks = [s.strip() for s in args.sinks.split(",") if s.strip()]
    unknown = set(sinks) - {"redis", "postgres", "catalog"}
    if unknown:
        parser.error(f"unknown sinks: {', '.join(sorted(unknown))}")
    if args.from_events:
        recovery = Path(os.environ.get("RUN_DIR", ".run")) / "aggregator" / "recovery"
        if recovery.exists():
            shutil.rmtree(recovery)
            print(f"removed {recovery}: the aggregator re-reads cart-events when it starts")
    results = []
    for sink in sinks:
        try:
            results.append(replay_sink(cfg, sink, show_progress=not args.quiet))
        except GroupActive as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    for r in results:
        rate = r.records / r.seconds if r.seconds else 0.0
        print(f"{r.sink:9} {r.records:>10} records in {r.seconds:7.1f}s ({rate:,.0f}/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
