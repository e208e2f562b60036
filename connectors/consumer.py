"""The at-least-once consume loop every sink shares: batch, store, dead-letter, then commit.

A batch closes at `batch_max` records or after `batch_wait_s`. While one batch is being written
(a worker thread: the store calls wait on I/O and release the GIL), the next one is read and
decoded. A batch's offsets are committed only after its store write and its dead letters are
done, so a crash at any point re-reads records, never skips them; re-applying is a no-op
because every store write is version-guarded.

Rebalances: librdkafka runs the callbacks inside `consume()`, when at most one batch is in
flight. On revoke, the loop waits a little for that batch; stored in time, its offsets are
committed then and there; otherwise they are dropped (the next owner re-reads those records).
Offsets of an assignment that has since been revoked or lost are never committed.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from cart_contract import dead_letter_from_error, encode_dead_letter
from cart_contract.dead_letter import dead_letter_reason
from cart_contract.retry import Stopped, retrying
from cart_contract.settings import client_config
from connectors.records import Poison

log = logging.getLogger(__name__)

__all__ = ["BatchDone", "DeadLetters", "Poison", "RecordWriter", "Stopper", "commit_offsets", "run",
           "with_retry"]


class RecordWriter(Protocol):
    """How a sink turns a batch of records into store writes, in two steps."""

    def prepare(self, batch: Sequence[Message]) -> Any:
        """Decode and dedupe (CPU only; runs while the previous batch is being written)."""

    def write(self, prepared: Any) -> list[Poison]:
        """Write to the stores; return every poison record; raise while a store is down."""


# The simple form of a writer: one callable taking the batch, returning its poison records.
StoreBatch = Callable[[Sequence[Message]], list[Poison]]


class _CallableWriter:
    def __init__(self, store: StoreBatch) -> None:
        self.store = store

    def prepare(self, batch: Sequence[Message]) -> Sequence[Message]:
        return batch

    def write(self, prepared: Sequence[Message]) -> list[Poison]:
        return self.store(prepared)


class DeadLetters:
    """Writes poison records to the dead-letter topic and waits until the broker has them."""

    def __init__(self, bootstrap: str | Mapping[str, Any], topic: str, stage: str) -> None:
        self.topic, self.stage = topic, stage
        self._producer = Producer({**client_config(bootstrap), "acks": "all",
                                   "enable.idempotence": True, "linger.ms": 5,
                                   "message.timeout.ms": 30000})

    def send(self, poisons: Sequence[Poison]) -> None:
        """Produce every entry and flush; raise if any was not delivered."""
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        for p in poisons:
            m = p.message
            entry = dead_letter_from_error(
                p.error, source_topic=m.topic(), partition=m.partition(), offset=m.offset(),
                key=m.key(), value=m.value(), stage=self.stage,
            )
            log.warning("dead letter %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(),
                        p.error)
            self._producer.produce(self.topic, key=m.key(), value=encode_dead_letter(entry),
                                   on_delivery=on_delivery)
        if self._producer.flush(35) or failures:
            raise RuntimeError(f"dead-letter delivery failed: {failures[:3] or 'timeout'}")


class Stopper:
    """Turns SIGTERM/SIGINT into a flag the loop checks between batches and retries."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> Stopper:
        """Route the signals to this stopper (main thread only)."""
        self._previous = {sig: signal.signal(sig, lambda *_: self.event.set())
                          for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def uninstall(self) -> None:
        """Give the signals back to whoever had them before install()."""
        for sig, handler in getattr(self, "_previous", {}).items():
            signal.signal(sig, handler)
        self._previous = {}

    def stop(self) -> None:
        """Ask the loop to stop."""
        self.event.set()

    @property
    def stopped(self) -> bool:
        """Whether a stop was asked for."""
        return self.event.is_set()


def with_retry(write: Callable[[], list[Poison]], what: str, stopper: Stopper,
               max_backoff_s: float) -> list[Poison] | None:
    """Run `write` until it succeeds, backing off; None when stopped before it did."""
    # Any store failure means: wait and retry.
    retry = retrying(what, on=Exception, until=stopper.event, max_s=max_backoff_s, logger=log)
    try:
        return retry.call(write)
    except Stopped:
        return None


def commit_offsets(batch: Sequence[Message]) -> dict[int, int]:
    """Partition -> the offset to commit after storing `batch` (its last offset + 1)."""
    nxt: dict[int, int] = {}
    for m in batch:
        p, o = m.partition(), m.offset() + 1
        if o > nxt.get(p, -1):
            nxt[p] = o
    return nxt


@dataclass(frozen=True)
class BatchDone:
    """What one stored batch did, for progress reports and metrics."""

    records: int
    poison: int
    stored_until: dict[int, int]  # partition -> next offset, over every batch stored so far
    # The store write and dead letters, retries included (a measurement: not compared).
    seconds: float = field(default=0.0, compare=False)
    reasons: tuple[str, ...] = ()  # each dead letter's reason code


@dataclass
class _Job:
    future: Future[list[Poison] | None]
    offsets: dict[int, int]
    records: int
    generation: int
    committed: bool = False
    timing: list[float] = field(default_factory=list)  # the worker appends the write's seconds


@dataclass
class BatchLoop:
    """The batch pipeline and rebalance bookkeeping of one consumer (see the module doc)."""

    consumer: Consumer
    topic: str
    writer: RecordWriter
    dead_letters: DeadLetters
    stopper: Stopper
    max_backoff_s: float
    revoke_wait_s: float
    on_batch: Callable[[BatchDone], None] | None
    on_assignment: Callable[[frozenset[int]], None] | None = None
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))
    assigned: set[int] = field(default_factory=set)
    generation: int = 0
    inflight: _Job | None = None
    stored_until: dict[int, int] = field(default_factory=dict)

    # ---- rebalance callbacks (run inside consume() and close(), on this thread)

    def on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions are ours now."""
        self.assigned |= {tp.partition for tp in partitions}
        self._assignment_changed()
        log.info("%s: assigned partitions %s", self.topic,
                 sorted(tp.partition for tp in partitions))

    def on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit the in-flight batch if it gets stored in time, else drop its offsets."""
        job = self.inflight
        try:
            if job is not None and not job.committed and job.generation == self.generation:
                wait([job.future], timeout=self.revoke_wait_s)
                if job.future.done() and job.future.exception() is None \
                        and job.future.result() is not None:
                    self._commit(job)  # stored: spare the next owner re-reading it
                else:
                    log.info("%s: revoked while a batch of %d was not stored yet: its offsets "
                             "are not committed, the records will be read again",
                             self.topic, job.records)
        except Exception:  # noqa: BLE001 - a callback must not raise into librdkafka
            log.exception("%s: commit on revoke failed", self.topic)
        self.generation += 1  # offsets of the revoked assignment are never committed later
        self.assigned -= {tp.partition for tp in partitions}
        self._assignment_changed()
        log.info("%s: revoked partitions %s", self.topic, sorted(tp.partition for tp in partitions))

    def on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions were taken without a revoke: nothing of theirs can be committed."""
        self.generation += 1
        self.assigned -= {tp.partition for tp in partitions}
        self._assignment_changed()
        log.warning("%s: lost partitions %s (their uncommitted records will be read again)",
                    self.topic, sorted(tp.partition for tp in partitions))

    def _assignment_changed(self) -> None:
        if self.on_assignment is not None:
            self.on_assignment(frozenset(self.assigned))

    # ---- the batch pipeline

    def _store(self, prepared: Any, timing: list[float]) -> list[Poison] | None:
        """Worker thread: write, then dead-letter; None when stopped before both were done."""
        started = time.perf_counter()
        poisons = with_retry(lambda: self.writer.write(prepared), f"{self.topic}: store write",
                             self.stopper, self.max_backoff_s)
        if poisons is None:
            return None
        if poisons and with_retry(lambda: self.dead_letters.send(poisons) or [],
                                  f"{self.topic}: dead-letter write", self.stopper,
                                  self.max_backoff_s) is None:
            return None
        timing.append(time.perf_counter() - started)
        return poisons

    def submit(self, batch: list[Message], prepared: Any) -> None:
        """Start writing a prepared batch on the worker thread."""
        timing: list[float] = []
        self.inflight = _Job(self.executor.submit(self._store, prepared, timing),
                             commit_offsets(batch), len(batch), self.generation, timing=timing)

    def finish(self) -> bool:
        """Wait for the in-flight batch and commit it; False when it was not stored (stop)."""
        job, self.inflight = self.inflight, None
        if job is None:
            return True
        poisons = job.future.result()  # a BaseException from the store propagates: a crash
        if poisons is None:
            return False
        for p, o in job.offsets.items():
            self.stored_until[p] = max(o, self.stored_until.get(p, 0))
        if not job.committed and job.generation == self.generation:
            self._commit(job)
        if self.on_batch:
            self.on_batch(BatchDone(job.records, len(poisons), dict(self.stored_until),
                                    job.timing[0] if job.timing else 0.0,
                                    tuple(dead_letter_reason(p.error) for p in poisons)))
        return True

    def _commit(self, job: _Job) -> None:
        offsets = [TopicPartition(self.topic, p, o) for p, o in job.offsets.items()
                   if p in self.assigned]
        job.committed = True
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # E.g. the group moved on (max.poll.interval exceeded during a long outage): the
            # records are read again and re-storing them is a no-op.
            log.warning("%s: offset commit failed, records will be read again: %s",
                        self.topic, exc)

    def caught_up(self, until: dict[int, int], idle: bool) -> bool:
        """Whether every partition is stored up to its `until` offset."""
        done = {p: self.stored_until.get(p, -1) for p in until}
        if idle:  # compaction or control records can leave the last offsets without a record
            for tp in self.consumer.position([TopicPartition(self.topic, p) for p in until]):
                if tp.offset >= 0:
                    done[tp.partition] = max(done[tp.partition], tp.offset)
        return all(done[p] >= end for p, end in until.items())


def run(
    *,
    bootstrap: str | Mapping[str, Any],
    topic: str,
    group: str,
    store: RecordWriter | StoreBatch,
    dead_letters: DeadLetters,
    stopper: Stopper,
    batch_max: int = 5000,
    batch_wait_s: float = 0.1,
    max_backoff_s: float = 5.0,
    revoke_wait_s: float = 10.0,
    on_batch: Callable[[BatchDone], None] | None = None,
    on_assignment: Callable[[frozenset[int]], None] | None = None,
    until: dict[int, int] | Callable[[], dict[int, int] | None] | None = None,
    consumer_config: dict[str, Any] | None = None,
) -> None:
    """Consume `topic` as `group`: store each batch, dead-letter its poison, then commit.

    `on_batch` hears of every stored batch, `on_assignment` of every change of the partitions
    this consumer owns (both on this thread). Returns when `stopper` is set, or with `until`
    (partition -> end offset) once every partition's records before its end offset are stored.
    `until` may be a function, asked after every batch, that returns None while the end is not
    known yet (replay from events: the end is where the aggregator's output stands once it has
    folded the log).
    """
    writer: RecordWriter = (store if hasattr(store, "prepare")  # type: ignore[assignment]
                            else _CallableWriter(store))  # type: ignore[arg-type]
    consumer = Consumer({
        **client_config(bootstrap),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # A sink restarted after a crash gets its partitions only once the dead member's
        # session expires: 10 s of frozen read model instead of librdkafka's 45 s.
        "session.timeout.ms": 10000,
        **(consumer_config or {}),
    })
    loop = BatchLoop(consumer, topic, writer, dead_letters, stopper, max_backoff_s,
                     revoke_wait_s, on_batch, on_assignment)
    consumer.subscribe([topic], on_assign=loop.on_assign, on_revoke=loop.on_revoke,
                       on_lost=loop.on_lost)
    log.info("consuming %s as group %s", topic, group)
    try:
        while not stopper.stopped:
            msgs = consumer.consume(num_messages=batch_max, timeout=batch_wait_s)
            batch = []
            for m in msgs:
                err = m.error()
                if err is None:
                    if m.partition() in loop.assigned:
                        batch.append(m)
                elif err.fatal():
                    raise KafkaException(err)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error: %s", topic, err)
            # Decoding this batch overlaps the store write of the previous one.
            prepared = writer.prepare(batch) if batch else None
            had_inflight = loop.inflight is not None
            if not loop.finish():
                return  # stopped mid-retry: nothing committed, the batch comes again
            end = until() if callable(until) else until
            if end is not None and had_inflight and loop.caught_up(end, idle=False):
                return  # anything consumed past the end is left to the sinks, uncommitted
            if batch:
                loop.submit(batch, prepared)
            elif end is not None and loop.caught_up(end, idle=True):
                return
        loop.finish()
    finally:
        try:
            consumer.close()  # runs on_revoke: a finished batch is committed there
        finally:
            loop.executor.shutdown(wait=True, cancel_futures=True)


def setup_logging() -> None:
    """Plain timestamped logs on stderr."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("confluent_kafka").setLevel(logging.WARNING)
    time.tzset()


def tune_gc() -> None:
    """Collect garbage ten times less often (a sink's or a replay's process, once at start).

    A batch allocates a dozen objects per record that die by reference count (nothing forms
    cycles), but every allocation counts toward a collection that walks whatever is alive (the
    batch being written, the next one decoded): decoding and writing both cart sinks' batches
    took ~46 µs of CPU a record with the default thresholds and ~33 µs with these (as the
    aggregator's, cart_aggregator/service.py). Modules and config never need collecting.
    """
    gc.freeze()
    gc.set_threshold(100_000, 20, 10)
