"""Rebuild the read models from the log.

    cartstream replay [--sinks redis,postgres,catalog] [--from details|events] [--quiet]

Stop the sinks first (`make replay` does): Kafka refuses to move the offsets of a consumer group
that has members, and this command checks every chosen group before it touches any. For each
chosen sink it then resets the group to the start of its topic and re-applies every record up to
the end offsets seen at start, with the sink's own code, showing records done, records left and
the rate (a bar on a terminal, else a log line every few seconds), and ends with a summary.
Nothing is truncated: the version guards make records already stored a no-op and fill in
whatever is missing or older. When it returns, the group's offsets are at the end again and the
sinks carry on from there.

--from events re-folds the whole of `cart-events` from scratch and rebuilds the cart read
models (the redis and postgres sinks) from that: stop the aggregator too (`make replay
FROM=events` does); this command refuses while one is running on its recovery directory
($RUN_DIR/aggregator/recovery, or $AGG_RECOVERY_DIR). It deletes that directory, notes the end
offsets of `cart-events` and `cart-details-event`, moves the cart sinks' groups to the end of
`cart-details-event` (what the new fold writes supersedes what is there), starts the aggregator
(`cartstream aggregate`, fresh state, its log in $RUN_DIR/logs/aggregator-replay.log) and runs
the cart sinks here. "Everything up to the log's end at start" is held when
  1. every offset of `cart-events` below its end at start is named by a record the new fold
     wrote (each event read gets one, naming it as the customer's last event) or by the
     aggregator's dead letter for it (offsets, not counts: a restarted aggregator repeats
     records), and then
  2. each cart sink has stored and committed `cart-details-event` up to its end offsets at the
     moment 1. held.
Then the aggregator is stopped (it resumes from its snapshot when started again) and the
command returns. Other chosen sinks (catalog) are replayed from their topics as above.

Exit status: 0 done, 2 refused (a group has members, the aggregator runs) or failed.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from cart_contract import ContractError
from cart_contract.dead_letter import decode_dead_letter
from connectors.config import CART_SINKS, SINKS, Config
from connectors.consumer import BatchDone, DeadLetters, Stopper, run
from connectors.progress import Progress
from connectors.records import CartItem, Poison, parse_carts
from connectors.service import build_sink
from connectors.sinks import Prepared, StoreWriter

AGGREGATOR = "aggregator"  # the name of the aggregator's line in a replay's summary
STALL_S = 60.0  # a replay from events says so when no event got its record for this long


@dataclass(frozen=True)
class ReplayResult:
    """What one sink's replay did."""

    sink: str
    records: int
    written: int
    dead_lettered: int
    seconds: float
    cpu_s: float | None = None  # CPU of the process(es) doing it, when measured

    @property
    def rate(self) -> float:
        """Records per second."""
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for the final report."""
        cpu = "" if self.cpu_s is None else f", {self.cpu_s:.1f}s CPU"
        if self.sink == AGGREGATOR:
            return (f"{self.sink:10} {self.records:>10,} events folded in {self.seconds:7.1f}s "
                    f"({self.rate:>9,.0f}/s), {self.dead_lettered:,} dead-lettered{cpu}")
        skipped = self.records - self.written - self.dead_lettered
        return (f"{self.sink:10} {self.records:>10,} records in {self.seconds:7.1f}s "
                f"({self.rate:>9,.0f}/s): {self.written:,} written, {skipped:,} already "
                f"current or superseded, {self.dead_lettered:,} dead-lettered{cpu}")


class Refused(RuntimeError):
    """The replay cannot start safely."""


class Failed(RuntimeError):
    """The replay could not finish (the aggregator it started died)."""


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
    start = time.monotonic()
    if not until:
        return ReplayResult(sink, 0, 0, 0, 0.0)
    store = build_sink(sink, cfg)
    counts = _apply_up_to(cfg, cfg.topic_of(sink), sink, store, sink, marks, until,
                          stopper, show_progress)
    return ReplayResult(sink, counts["records"], store.written, counts["poison"],
                        time.monotonic() - start)


def _apply_up_to(cfg: Config, topic: str, sink: str, store: Any, name: str,
                 marks: dict[int, tuple[int, int]], until: dict[int, int],
                 stopper: Stopper | None, show_progress: bool) -> dict[str, int]:
    """Consume `topic` in `sink`'s group into `store` until `until`, showing progress by
    offsets; the records and poison seen."""
    total = sum(high - low for low, high in marks.values())
    bar = Progress(f"replay {name}", total, "records", enabled=show_progress)
    counts = {"records": 0, "poison": 0}

    def progress(done: BatchDone) -> None:
        counts["records"] += done.records
        counts["poison"] += done.poison
        # Offsets, not records, measure progress: compaction leaves gaps in a topic.
        covered = sum(min(done.stored_until.get(p, low), high) - low
                      for p, (low, high) in marks.items())
        bar.set(covered, note=f"{total - covered:,} left")

    try:
        run(bootstrap=cfg.kafka_client(), topic=topic, group=cfg.group(sink), store=store,
            dead_letters=DeadLetters(cfg.kafka_client(), cfg.topic_dead_letter,
                                     f"replay-{name}"),
            stopper=stopper or Stopper(), batch_max=cfg.replay_batch_max,
            batch_wait_s=cfg.batch_wait_s, max_backoff_s=cfg.retry_max_s, on_batch=progress,
            until=until)
    finally:
        bar.close()
    return counts


def replay_cart_sinks(cfg: Config, sinks: Sequence[str], show_progress: bool = True,
                      stopper: Stopper | None = None) -> list[ReplayResult]:
    """Reset the cart sinks' groups (idle: `replay` checks) to the start of
    `cart-details-event` and re-apply it up to today's end, each record decoded once for all
    of them (CartSinks); return what each did."""
    topic = cfg.topic_cart_details
    marks = watermarks(cfg, topic)
    for sink in sinks:
        move_group(cfg, sink, {p: low for p, (low, _) in marks.items()})
    until = {p: high for p, (low, high) in marks.items() if high > low}
    start, cpu_start = time.monotonic(), time.process_time()
    if not until:
        return [ReplayResult(s, 0, 0, 0, 0.0) for s in sinks]
    writer = CartSinks({s: build_sink(s, cfg) for s in sinks})
    try:
        counts = _apply_up_to(cfg, topic, sinks[0], writer, "+".join(sinks), marks, until,
                              stopper, show_progress)
    finally:
        writer.close()
    copy_group_offsets(cfg, sinks[0], sinks[1:])
    seconds = time.monotonic() - start
    cpu = round(time.process_time() - cpu_start, 1)  # one process for all of them
    return [ReplayResult(s, counts["records"], w.written, counts["poison"] if i == 0 else 0,
                         seconds, cpu if i == 0 else None)
            for i, (s, w) in enumerate(writer.writers.items())]


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


SOURCES = ("details", "events")


def replay(cfg: Config, sinks: Sequence[str], from_events: bool = False,
           show_progress: bool = True, stopper: Stopper | None = None,
           say: Callable[[str], None] = print) -> list[ReplayResult]:
    """Check every chosen group is idle, then replay from `cart-details-event` or, with
    `from_events`, re-fold `cart-events` with a fresh aggregator (see the module doc).

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
    refold = [s for s in sinks if s in CART_SINKS] if from_events else []
    if from_events:
        if reset_aggregator(cfg):
            say(f"removed {cfg.recovery_dir}: the aggregator re-reads cart-events from the start")
        else:
            say(f"no aggregator state in {cfg.recovery_dir}: it starts from the log")
    results = []
    # The cart sinks read one topic: one pass decodes each record once for both.
    together = [] if from_events else [s for s in sinks if s in CART_SINKS]
    if together:
        results += replay_cart_sinks(cfg, together, show_progress=show_progress,
                                     stopper=stopper)
    for sink in sinks:
        if stopper.stopped:
            say("interrupted: the sinks carry on from where the replay stopped")
            return results
        if sink in refold or sink in together:
            continue
        results.append(replay_sink(cfg, sink, show_progress=show_progress, stopper=stopper))
    if stopper.stopped:
        say("interrupted: the sinks carry on from where the replay stopped")
        return results
    if refold:
        results += replay_events(cfg, refold, show_progress=show_progress, stopper=stopper,
                                 say=say)
        if stopper.stopped:
            say("interrupted: the aggregator and the sinks carry on from where the replay "
                "stopped when they start again")
    return results


# ------------------------------------------------------------------ replay from cart-events


class Coverage:
    """Which offsets of `cart-events` below its end at start have their answer yet.

    The fold answers every event it reads with one record whose `customer_event` names it, and
    the aggregator dead-letters an event it cannot parse; offsets are ticked off, not counted,
    so records repeated by a restarted aggregator change nothing. Every offset below the end is
    a record: `cart-events` is never compacted and nobody writes it in transactions.
    """

    def __init__(self, marks: dict[int, tuple[int, int]]) -> None:
        self.low = {p: low for p, (low, high) in marks.items() if high > low}
        self.seen = {p: bytearray(marks[p][1] - low) for p, low in self.low.items()}
        self.total = self.left = sum(len(b) for b in self.seen.values())
        self._lock = threading.Lock()

    def note(self, positions: Iterable[tuple[int, int]]) -> None:
        """Tick off (partition, offset) pairs; those outside the range are ignored."""
        with self._lock:
            low, seen = self.low, self.seen
            for p, o in positions:
                marks = seen.get(p)
                if marks is None:
                    continue
                i = o - low[p]
                if 0 <= i < len(marks) and not marks[i]:
                    marks[i] = 1
                    self.left -= 1

    def note_items(self, items: Sequence[CartItem]) -> None:
        """Tick off the events that cart records answer (a sink writer's `observe`)."""
        self.note((e.partition, e.offset) for e in (it.cart.customer_event for it in items))

    @property
    def covered(self) -> int:
        """Events answered so far."""
        return self.total - self.left

    @property
    def done(self) -> bool:
        """Whether every event has its answer."""
        return self.left <= 0


def aggregator_env(cfg: Config) -> dict[str, str]:
    """The variables that make `cartstream aggregate` work on this configuration's topics."""
    return {"KAFKA_BOOTSTRAP": cfg.kafka_bootstrap, "TOPIC_CART_EVENTS": cfg.topic_cart_events,
            "TOPIC_PRODUCTS": cfg.topic_products, "TOPIC_CART_DETAILS": cfg.topic_cart_details,
            "TOPIC_DEAD_LETTER": cfg.topic_dead_letter,
            "TOPIC_CART_RESERVATIONS": cfg.topic_cart_reservations,
            "TOPIC_PRODUCT_RESERVATIONS": cfg.topic_product_reservations,
            "RUN_DIR": str(cfg.run_dir), "AGG_RECOVERY_DIR": str(cfg.recovery_dir)}


# How the replay's aggregator runs unless the environment says otherwise: it folds a backlog
# from a fresh state and then stops, so it reads bigger batches (more of a customer's events per
# keyed call; ~0.4 GiB more memory at 100k customers) and never collects garbage (a fraction of
# its CPU at 100k customers; the process ends with the replay). Measured in
# docs/architecture.md, "Replay".
REPLAY_AGGREGATOR_DEFAULTS = {"AGG_SOURCE_BATCH_SIZE": "30000", "AGG_GC_THRESHOLD": "0"}


def replay_aggregator_environ(cfg: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """The replay aggregator's environment: the replay's defaults, what `environ` sets, and
    this configuration's topics and recovery directory."""
    return {**REPLAY_AGGREGATOR_DEFAULTS, **environ, **aggregator_env(cfg)}


def start_aggregator(cfg: Config, log_path: Path) -> subprocess.Popen[bytes]:
    """`cartstream aggregate` of this code tree, as `make up` runs it (with the replay's
    defaults), logging to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "cartstream", "aggregate"],
                                cwd=Path(__file__).resolve().parents[1],
                                env=replay_aggregator_environ(cfg, os.environ),
                                stdout=log, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """SIGTERM (the aggregator stops at a snapshot), then SIGKILL after `timeout_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def move_group(cfg: Config, sink: str, offsets: dict[int, int]) -> None:
    """Set the sink's group offsets on its topic (the group is idle: checked before)."""
    admin = AdminClient(cfg.kafka_client())
    group = cfg.group(sink)
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(cfg.topic_of(sink), p, o) for p, o in offsets.items()])
    try:
        admin.alter_consumer_group_offsets([request])[group].result(timeout=30)
    except KafkaException as exc:
        raise GroupActive(f"Kafka refused to move group {group}: {exc}; is the {sink} sink "
                          f"running?") from exc


class EndOffsets:
    """The end offsets of one topic, asked again and again through one consumer."""

    def __init__(self, cfg: Config, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({**cfg.kafka_client(),
                                  "group.id": "cartstream-probe"})
        self.partitions = list(self.consumer.list_topics(topic, timeout=10).topics[topic]
                               .partitions)

    def now(self) -> dict[int, int]:
        """Partition -> high watermark, as the broker has it now."""
        return {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                       timeout=10)[1]
                for p in self.partitions}

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


class DeadLetterWatch:
    """Reads the dead-letter topic from its end at start; ticks off the events the
    aggregator could not parse (they get a dead letter instead of a record)."""

    def __init__(self, cfg: Config, coverage: Coverage) -> None:
        self.source, self.coverage = cfg.topic_cart_events, coverage
        self.letters = 0
        marks = watermarks(cfg, cfg.topic_dead_letter)
        self.consumer = Consumer({**cfg.kafka_client(),
                                  "group.id": "cartstream-replay-dead-letters",
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(cfg.topic_dead_letter, p, high)
                              for p, (_, high) in marks.items()])

    def poll(self) -> None:
        """Read what arrived (never blocks long)."""
        for m in self.consumer.consume(10_000, 0.01):
            if m.error() is not None or not m.value():
                continue
            try:
                letter = decode_dead_letter(m.value())
            except ContractError:
                continue
            if letter.source_topic == self.source and letter.stage == "aggregator":
                self.letters += 1
                self.coverage.note([(letter.partition, letter.offset)])

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


class CartSinks:
    """The cart sinks of a replay from events as one writer on one consumer: each record is
    decoded once, then coalesced and written by each sink's own writer, concurrently (both
    mostly wait on their store). A retry writes both again: the version guards make it safe."""

    def __init__(self, writers: dict[str, StoreWriter]) -> None:
        self.writers = writers
        self.observe: Callable[[list[CartItem]], None] | None = None
        self._pool = ThreadPoolExecutor(len(writers), thread_name_prefix="replay-write")

    def prepare(self, batch: Sequence[Any]) -> list[tuple[StoreWriter, Prepared]]:
        """Decode once; each writer keeps what it stores (its poison reported once)."""
        items, poison = parse_carts(batch)
        if self.observe is not None:
            self.observe(items)
        return [(w, w.coalesce(items, poison if i == 0 else []))  # type: ignore[attr-defined]
                for i, w in enumerate(self.writers.values())]

    def write(self, prepared: list[tuple[StoreWriter, Prepared]]) -> list[Poison]:
        """Every writer's write; raises (after all ended) if one did."""
        futures = [self._pool.submit(w.write, p) for w, p in prepared]
        wait(futures)
        return [poison for f in futures for poison in f.result()]

    def close(self) -> None:
        """Stop the write threads."""
        self._pool.shutdown(wait=True)


def copy_group_offsets(cfg: Config, source: str, targets: Sequence[str]) -> None:
    """Give the groups of `targets` the committed offsets of `source`'s group (all idle)."""
    topic = cfg.topic_of(source)
    probe = Consumer({**cfg.kafka_client(), "group.id": cfg.group(source),
                      "enable.auto.commit": False})
    try:
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        done = {tp.partition: tp.offset for tp in probe.committed(
            [TopicPartition(topic, p) for p in parts], timeout=10) if tp.offset >= 0}
    finally:
        probe.close()
    for sink in targets:
        move_group(cfg, sink, done)


def replay_events(cfg: Config, sinks: Sequence[str], show_progress: bool = True,
                  stopper: Stopper | None = None,
                  say: Callable[[str], None] = print) -> list[ReplayResult]:
    """Re-fold `cart-events` with a fresh aggregator and store its records with `sinks`
    (cart sinks, idle, aggregator state deleted: `replay` checks), up to the log's end at
    start (the module doc says when that is)."""
    stopper = stopper or Stopper()
    started = time.monotonic()
    cpu_here, cpu_children = time.process_time(), _children_cpu()
    coverage = Coverage(watermarks(cfg, cfg.topic_cart_events))
    details_start = {p: high for p, (_, high) in watermarks(cfg, cfg.topic_cart_details).items()}
    for sink in sinks:
        move_group(cfg, sink, details_start)
    writer = CartSinks({s: build_sink(s, cfg) for s in sinks})
    writer.observe = coverage.note_items
    # One consumer for all: its group is the first sink's; the others get its offsets at the end.
    lead = sinks[0]
    target: dict[str, dict[int, int] | None] = {"until": None}
    counts = {"records": 0, "poison": 0}
    stored: dict[int, int] = dict(details_start)
    failure: list[BaseException] = []

    def on_batch(done: BatchDone) -> None:
        counts["records"] += done.records
        counts["poison"] += done.poison
        stored.update(done.stored_until)

    def consume() -> None:
        try:
            run(bootstrap=cfg.kafka_client(), topic=cfg.topic_cart_details,
                group=cfg.group(lead), store=writer,
                dead_letters=DeadLetters(cfg.kafka_client(), cfg.topic_dead_letter,
                                         "replay-" + "+".join(sinks)),
                stopper=stopper, batch_max=cfg.replay_batch_max, batch_wait_s=cfg.batch_wait_s,
                max_backoff_s=cfg.retry_max_s, on_batch=on_batch,
                until=lambda: target["until"])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)
            stopper.stop()

    log_path = cfg.run_dir / "logs" / "aggregator-replay.log"
    bar = Progress("replay from events", coverage.total, "events", enabled=show_progress)
    watch = DeadLetterWatch(cfg, coverage)
    output = EndOffsets(cfg, cfg.topic_cart_details)
    aggregator = start_aggregator(cfg, log_path)
    say(f"aggregator started (pid {aggregator.pid}, log {log_path}): re-folding "
        f"{coverage.total:,} events")
    folded_s: float | None = None
    moved = (coverage.covered, time.monotonic())  # the last change, to tell a stall
    thread = threading.Thread(target=consume, name="replay-sinks", daemon=True)
    try:
        thread.start()
        while thread.is_alive():
            if aggregator.poll() is not None and folded_s is None:
                raise Failed(f"the aggregator exited ({aggregator.returncode}) before it had "
                             f"folded the log; see {log_path}")
            watch.poll()
            ends = output.now()
            if coverage.done and folded_s is None:
                folded_s = time.monotonic() - started
                # Every event has its record: they all lie below today's end of the output.
                target["until"] = {p: e for p, e in ends.items() if e > details_start.get(p, 0)}
            # Lag per stage: events the aggregator has not written a record for yet (a count:
            # one record per event read), records the sinks have not stored. The count done is
            # the events whose record the sinks have read (what the end waits for).
            written = sum(e - details_start.get(p, 0) for p, e in ends.items())
            lag = sum(max(0, e - stored.get(p, 0)) for p, e in ends.items())
            bar.set(coverage.covered, note=f"lag: aggregator {max(0, coverage.total - written):,} "
                                           f"events, {'+'.join(sinks)} {lag:,} records")
            if coverage.covered != moved[0]:
                moved = (coverage.covered, time.monotonic())
            elif folded_s is None and lag == 0 and time.monotonic() - moved[1] > STALL_S:
                moved = (coverage.covered, time.monotonic())
                say(f"{coverage.left:,} events still have no record after {STALL_S:.0f}s: the "
                    f"aggregator holds them (waiting for a product or a reservation?); see "
                    f"{log_path}")
            stopper.event.wait(0.5)
        if failure:
            raise failure[0]
    finally:
        if thread.is_alive():
            stopper.stop()
        thread.join()
        writer.close()
        bar.close()
        stop_process(aggregator)
        watch.close()
        output.close()
    # Also when interrupted: the lead's group holds only what both sinks stored.
    copy_group_offsets(cfg, lead, sinks[1:])
    seconds = time.monotonic() - started
    # The aggregator's CPU (a child, waited for) and this process's, which the sinks share.
    results = [ReplayResult(AGGREGATOR, coverage.covered, coverage.covered, watch.letters,
                            folded_s or seconds, round(_children_cpu() - cpu_children, 1))]
    sinks_cpu = round(time.process_time() - cpu_here, 1)
    results += [ReplayResult(name, counts["records"], w.written,
                             counts["poison"] if i == 0 else 0, seconds,
                             sinks_cpu if i == 0 else None)
                for i, (name, w) in enumerate(writer.writers.items())]
    return results


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
