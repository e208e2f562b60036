"""A Kafka partitioned source on confluent_kafka and bytewax's public source API.

bytewax 0.21.1's KafkaSource wraps every record in a `KafkaSourceMessage`, a frozen dataclass
with headers, latency and timestamp that costs ~2 µs a record to build (about a tenth of the
aggregator's whole budget per event). The parse steps only use key, value, topic, partition and
offset, so this source emits a `SourceMessage` tuple with just those. It is written on
`bytewax.inputs.FixedPartitionedSource` / `StatefulSourcePartition` and confluent_kafka alone,
with the consumer settings of bytewax's KafkaSource: nothing relies on bytewax's private
attributes. A partition is "<index>-<topic>", as bytewax names them, and its snapshot is the next
offset to read.

Offsets: with `raise_on_errors=False`, bytewax's own loop takes the offset of *any* message it
consumed as "read up to here", including a consumer error's (-1001). If a batch ends with an
error, the next snapshot records offset -1000, which is librdkafka's OFFSET_STORED: a resume
from it falls back to `auto.offset.reset` (the end of the topic) and silently skips everything
in between. This loop only ever moves the resume offset past real records.

Idle: bytewax calls `next_batch` again at once after a batch with items, and 1 ms after an
empty one, and each poll used to block 1 ms in librdkafka: nine partitions kept the worker
polling all the time with nothing to read. Now a poll never blocks, and after an empty one the
partition asks to be woken at the next `idle_wait` tick (10 ms by default, `AGG_SOURCE_IDLE_MS`):
a record arriving on an idle partition waits at most that long, and a partition with a backlog
is never delayed. What idle CPU is left is mostly bytewax's own (docs/operations.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from bytewax.connectors.kafka import KafkaError
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient

from cart_aggregator import metrics

IDLE_WAIT = timedelta(milliseconds=10)


def _next_tick(step: timedelta) -> datetime:
    """The next multiple of `step` on the clock, at most `step` from now.

    Every idle partition wakes on the same ticks, so the worker wakes once per tick for all
    of them: each wake-up runs the whole dataflow once (tens of µs), whatever it polls.
    """
    seconds = step.total_seconds()
    return datetime.fromtimestamp((math.floor(time.time() / seconds) + 1) * seconds, UTC)


class SourceMessage(NamedTuple):
    """A record as read: the fields of bytewax's KafkaSourceMessage that the flow uses."""

    key: bytes | None
    value: bytes | None
    topic: str | None
    partition: int | None
    offset: int | None


class ConsumerLike(Protocol):
    """The part of confluent_kafka.Consumer a partition uses (tests pass a fake)."""

    def consume(self, num_messages: int, timeout: float) -> list[Any]: ...
    def close(self) -> None: ...


class KafkaPartition(StatefulSourcePartition[Any, int | None]):
    """One Kafka partition, read by a consumer assigned to it alone; snapshots the next offset."""

    def __init__(self, consumer: ConsumerLike, topic: str, part_idx: int, offset: int,
                 batch_size: int, raise_on_errors: bool,
                 idle_wait: timedelta = IDLE_WAIT) -> None:
        self.consumer, self.topic, self.part_idx = consumer, topic, part_idx
        self.offset = offset  # the next offset to read (or OFFSET_BEGINNING before the first)
        metrics.note_assigned(topic, part_idx, offset)
        self.batch_size, self.raise_on_errors, self.idle_wait = (batch_size, raise_on_errors,
                                                                 idle_wait)
        self.eof = False
        self.awake: datetime | None = None

    def next_batch(self) -> list[SourceMessage | KafkaError[Any, Any]]:
        if self.eof:
            raise StopIteration()
        batch: list[SourceMessage | KafkaError[Any, Any]] = []
        # Never block in librdkafka: its fetcher threads fill the queue meanwhile, and an idle
        # worker sleeps in bytewax until `next_awake` instead of 1 ms per partition in here.
        last = None
        # One Kafka partition per partition of the source: its topic and index are constant.
        # tuple.__new__ builds the NamedTuple without its Python-level __new__ (~0.4 µs).
        topic, part, new = self.topic, self.part_idx, tuple.__new__
        for msg in self.consumer.consume(self.batch_size, 0):
            error = msg.error()
            if error is None:
                last = new(SourceMessage, (msg.key(), msg.value(), topic, part, msg.offset()))
                batch.append(last)
                continue
            record = new(SourceMessage, (msg.key(), msg.value(), topic, part, msg.offset()))
            if error.code() == ConfluentKafkaError._PARTITION_EOF:
                # Like bytewax: emit this batch, stop at the next call.
                self.eof = True
                break
            elif self.raise_on_errors:
                if last is not None:
                    self.offset = last.offset + 1
                raise RuntimeError(f"error consuming from Kafka topic {topic!r}: {error}")
            else:
                batch.append(KafkaError(error, record))
        if last is not None:
            self.offset = last.offset + 1  # resume after the last real record
            metrics.note_positions({(topic, part): self.offset})  # for the lag
        # Nothing to read: let the worker sleep instead of polling again in a millisecond.
        self.awake = _next_tick(self.idle_wait) if not batch and self.idle_wait else None
        return batch

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> int | None:
        return self.offset

    def close(self) -> None:
        self.consumer.close()


class OffsetSafeKafkaSource(FixedPartitionedSource[Any, int | None]):
    """Every partition of `topics`, read by `KafkaPartition`s (bytewax KafkaSource's arguments)."""

    def __init__(self, brokers: Iterable[str], topics: Iterable[str], *, tail: bool = True,
                 starting_offset: int = OFFSET_BEGINNING,
                 add_config: dict[str, Any] | None = None, batch_size: int = 1000,
                 raise_on_errors: bool = True, idle_wait: timedelta = IDLE_WAIT) -> None:
        if isinstance(brokers, str) or isinstance(topics, str):
            raise TypeError("brokers and topics must be iterables of str, not a str")
        self.brokers, self.topics = list(brokers), list(topics)
        self.tail, self.starting_offset = tail, starting_offset
        self.add_config = add_config or {}
        self.batch_size, self.raise_on_errors, self.idle_wait = (batch_size, raise_on_errors,
                                                                 idle_wait)

    def list_parts(self) -> list[str]:
        """Each Kafka partition is a partition of the source: "<index>-<topic>"."""
        admin = AdminClient({"bootstrap.servers": ",".join(self.brokers), **self.add_config})
        parts = []
        for topic in self.topics:
            # One topic at a time, so that a broker auto-creating topics creates this one.
            found = admin.list_topics(topic).topics[topic]
            if found.error is not None:
                raise RuntimeError(f"error listing partitions of Kafka topic {topic!r}: "
                                   f"{found.error.str()}")
            parts += [f"{i}-{topic}" for i in found.partitions]
        return parts

    def consumer_config(self) -> dict[str, Any]:
        """bytewax KafkaSource's consumer settings (without its statistics callback)."""
        return {
            # No consumer group: offsets live in the recovery snapshots.
            "group.id": "BYTEWAX_IGNORED",
            "enable.auto.commit": "false",
            "bootstrap.servers": ",".join(self.brokers),
            "enable.partition.eof": str(not self.tail),
            **self.add_config,
        }

    def build_part(self, step_id: str, for_part: str,
                   resume_state: int | None) -> KafkaPartition:
        """A consumer assigned to this partition alone, from the snapshotted offset."""
        idx, topic = for_part.split("-", 1)
        if topic not in self.topics:
            raise ValueError(f"cannot resume partition {for_part!r}: not one of {self.topics}")
        offset = self.starting_offset if resume_state is None else resume_state
        consumer = Consumer(self.consumer_config())
        consumer.assign([TopicPartition(topic, int(idx), offset)])
        return KafkaPartition(consumer, topic, int(idx), offset, self.batch_size,
                              self.raise_on_errors, self.idle_wait)
