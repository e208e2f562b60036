"""Rebuild the read models from the log.

    cartstream replay [--sinks redis,postgres,catalog] [--from-events] [--quiet]

Stop the sinks first (`make replay` does): Kafka refuses to move the offsets of a consumer group
that has members, and this command checks every chosen group before it touches any. For each
chosen sink it then resets the group to the start of its topic and re-applies every record up to
the end offsets seen at start, with the sink's own code, showing records done, records left and
the rate (a bar on a terminal, else a log line every few seconds), and ends with a summary.
Nothing is truncated: the version guards make records already stored a no-op and fill in
whatever is missing or older. When it returns, the group's offsets are at the end again and the
sinks carry on from there.

--from-events also rebuilds the aggregator's state from `cart-events`: it deletes the
aggregator's recovery directory ($RUN_DIR/aggregator/recovery, or $AGG_RECOVERY_DIR). Stop the
aggregator first (make down SVC=aggregator); this command refuses while one is running on that
directory. When the aggregator starts again it re-reads the whole event log and re-emits every
cart version, which the sinks store where missing (e.g. order history compacted out of
`cart-details-event`) and skip where present.

Exit status: 0 done, 2 refused (a group has members, the aggregator runs) or failed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.config import SINKS, Config
from connectors.consumer import BatchDone, DeadLetters, Stopper, run
from connectors.progress import Progress
from connectors.service import build_sink


@dataclass(frozen=True)
class ReplayResult:
    """What one sink's replay did."""

    sink: str
    records: int
    written: int
    dead_lettered: int
    seconds: float

    @property
    def rate(self) -> float:
        """Records per second."""
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for the final report."""
        skipped = self.records - self.written - self.dead_lettered
        return (f"{self.sink:9} {self.records:>10,} records in {self.seconds:7.1f}s "
                f"({self.rate:>9,.0f}/s): {self.written:,} written, {skipped:,} already "
                f"current or superseded, {self.dead_lettered:,} dead-lettered")


class Refused(RuntimeError):
    """The replay cannot start safely."""


class GroupActive(Refused):
    """The sink's consumer group still has members."""


def check_group_idle(admin: AdminClient, group: str, sink: str) -> None:
    """Raise GroupActive when `group` has members (its sink is running)."""
    desc = admin.describe_consumer_groups([group])[group].result(timeout=30)
    if desc.members:
        hosts = sorted({m.host for m in desc.members})
        raise GroupActive(
            f"consumer group {group} has {len(desc.members)} active member(s) on {hosts}: stop "
            f"the {sink} sink first (make down SVC=sink-{sink}) and run the replay again"
        )


def watermarks(cfg: Config, topic: str) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) offsets of `topic`."""
    probe = Consumer({**cfg.kafka_client(), "group.id": "cartstream-probe"})
    try:
        meta = probe.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise Refused(f"topic {topic}: {meta.error}")
        return {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in meta.partitions}
    finally:
        probe.close()


def reset_group(cfg: Config, sink: str) -> dict[int, tuple[int, int]]:
    """Move the sink's group to the start of its topic; return partition -> (low, high)."""
    admin = AdminClient(cfg.kafka_client())
    group, topic = cfg.group(sink), cfg.topic_of(sink)
    check_group_idle(admin, group, sink)
    marks = watermarks(cfg, topic)
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p, low) for p, (low, _) in marks.items()])
    try:
        admin.alter_consumer_group_offsets([request])[group].result(timeout=30)
    except KafkaException as exc:  # a sink started in the meantime
        raise GroupActive(f"Kafka refused to reset group {group}: {exc}; is the {sink} sink "
                          f"running?") from exc
    return marks


def replay_sink(cfg: Config, sink: str, show_progress: bool = True,
                stopper: Stopper | None = None) -> ReplayResult:
    """Reset one sink's group and re-apply its topic up to today's end; return what was done."""
    marks = reset_group(cfg, sink)
    until = {p: high for p, (low, high) in marks.items() if high > low}
    total = sum(high - low for low, high in marks.values())
    start = time.monotonic()
    if not until:
        return ReplayResult(sink, 0, 0, 0, 0.0)
    store = build_sink(sink, cfg)
    bar = Progress(f"replay {sink}", total, "records", enabled=show_progress)
    counts = {"records": 0, "poison": 0}

    def progress(done: BatchDone) -> None:
        counts["records"] += done.records
        counts["poison"] += done.poison
        # Offsets, not records, measure progress: compaction leaves gaps in a topic.
        covered = sum(min(done.stored_until.get(p, low), high) - low
                      for p, (low, high) in marks.items())
        bar.set(covered, note=f"{total - covered:,} left")

    try:
        run(bootstrap=cfg.kafka_client(), topic=cfg.topic_of(sink), group=cfg.group(sink),
            store=store,
            dead_letters=DeadLetters(cfg.kafka_client(), cfg.topic_dead_letter,
                                     f"replay-{sink}"),
            stopper=stopper or Stopper(), batch_max=cfg.batch_max,
            batch_wait_s=cfg.batch_wait_s, max_backoff_s=cfg.retry_max_s, on_batch=progress,
            until=until)
    finally:
        bar.close()
    return ReplayResult(sink, counts["records"], store.written, counts["poison"],
                        time.monotonic() - start)


def aggregator_processes(cfg: Config) -> list[int]:
    """Pids of running aggregator processes that use this recovery directory."""
    recovery = cfg.recovery_dir.resolve()
    found = set()
    pid_file = cfg.run_dir / "pids" / "aggregator.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        found.add(pid)
    except (OSError, ValueError):
        pass
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if not _looks_like_aggregator(cmdline) or int(proc.name) == os.getpid():
                continue
            if str(recovery) in cmdline:
                found.add(int(proc.name))
                continue
            env = dict(kv.split("=", 1) for kv in
                       (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                       if "=" in kv)
            theirs = Config.from_env(env)
            if not env.get("RUN_DIR") and not env.get("AGG_RECOVERY_DIR"):
                cwd = (proc / "cwd").resolve()
                theirs = Config(run_dir=cwd / ".run")
            if theirs.recovery_dir.resolve() == recovery:
                found.add(int(proc.name))
        except (OSError, ValueError):
            continue  # gone, or not ours to read
    return sorted(found)


def _looks_like_aggregator(cmdline: str) -> bool:
    # `cartstream aggregate` (console script or `python -m cartstream`), or the bare flow.
    return "cart_aggregator" in cmdline or ("cartstream" in cmdline and " aggregate" in cmdline)


def reset_aggregator(cfg: Config) -> bool:
    """Delete the aggregator's recovery directory; True if there was one. Refuses if it runs."""
    running = aggregator_processes(cfg)
    if running:
        raise Refused(f"the aggregator is running (pid {', '.join(map(str, running))}) on "
                      f"{cfg.recovery_dir}: stop it first (make down SVC=aggregator)")
    if not cfg.recovery_dir.exists():
        return False
    shutil.rmtree(cfg.recovery_dir)
    return True


def replay(cfg: Config, sinks: Sequence[str], from_events: bool = False,
           show_progress: bool = True, stopper: Stopper | None = None,
           say: Callable[[str], None] = print) -> list[ReplayResult]:
    """Check every chosen group is idle, then (optionally) reset the aggregator, then replay.

    Raises Refused (or KafkaException) before changing anything when a sink or the aggregator
    runs. Stops early, between batches, once `stopper` is set; `say` reports the steps.
    """
    unknown = sorted(set(sinks) - set(SINKS))
    if unknown:
        raise ValueError(f"unknown sinks: {', '.join(unknown)} (choose from {', '.join(SINKS)})")
    stopper = stopper or Stopper()
    admin = AdminClient(cfg.kafka_client())
    for sink in sinks:  # every check before any change
        check_group_idle(admin, cfg.group(sink), sink)
    if from_events:
        if reset_aggregator(cfg):
            say(f"removed {cfg.recovery_dir}: the aggregator re-reads cart-events from "
                f"the start when it next starts")
        else:
            say(f"no aggregator state in {cfg.recovery_dir}: it starts from the log")
    results = []
    for sink in sinks:
        results.append(replay_sink(cfg, sink, show_progress=show_progress, stopper=stopper))
        if stopper.stopped:
            say("interrupted: the sinks carry on from where the replay stopped")
            break
    return results
