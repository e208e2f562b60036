"""bytewax's KafkaSource, read with a lighter loop that never resumes from an error's offset.

bytewax 0.21.1's partition wraps every record in a `KafkaSourceMessage`, a frozen dataclass with
headers, latency and timestamp that costs ~2 µs a record to build (about a tenth of the
aggregator's whole budget per event). The parse steps only use key, value, topic, partition and
offset, so this partition emits a `SourceMessage` tuple with just those, built in a fifth of the
time. It reuses bytewax's partition for everything else (consumer settings, assignment, resume
offset, lag statistics).

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
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from bytewax.connectors.kafka import KafkaError, KafkaSource
from bytewax.inputs import StatefulSourcePartition
from confluent_kafka import KafkaError as ConfluentKafkaError

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


class _OffsetSafePartition(StatefulSourcePartition[Any, int | None]):
    """Reads through the consumer of bytewax's partition `inner` (its private fields, 0.21.1)."""

    def __init__(self, inner: Any, idle_wait: timedelta = IDLE_WAIT) -> None:
        self.inner = inner
        self.idle_wait = idle_wait
        self.awake: datetime | None = None

    def next_batch(self) -> list[SourceMessage | KafkaError[Any, Any]]:
        inner = self.inner
        if inner._eof:
            raise StopIteration()
        batch: list[SourceMessage | KafkaError[Any, Any]] = []
        # Never block in librdkafka: its fetcher threads fill the queue meanwhile, and an idle
        # worker sleeps in bytewax until `next_awake` instead of 1 ms per partition in here.
        last = None
        # One Kafka partition per partition of the source: its topic and index are constant.
        # tuple.__new__ builds the NamedTuple without its Python-level __new__ (~0.4 µs).
        topic, part, new = inner._topic, inner._part_idx, tuple.__new__
        for msg in inner._consumer.consume(inner._batch_size, 0):
            error = msg.error()
            if error is None:
                last = new(SourceMessage, (msg.key(), msg.value(), topic, part, msg.offset()))
                batch.append(last)
                continue
            record = new(SourceMessage, (msg.key(), msg.value(), topic, part, msg.offset()))
            if error.code() == ConfluentKafkaError._PARTITION_EOF:
                # Like bytewax: emit this batch, stop at the next call.
                inner._eof = True
                break
            elif inner._raise_on_errors:
                if last is not None:
                    inner._offset = last.offset + 1
                raise RuntimeError(f"error consuming from Kafka topic {inner._topic!r}: {error}")
            else:
                batch.append(KafkaError(error, record))
        if last is not None:
            inner._offset = last.offset + 1  # resume after the last real record
            metrics.note_positions({(topic, part): inner._offset})  # for the lag
        # Nothing to read: let the worker sleep instead of polling again in a millisecond.
        self.awake = _next_tick(self.idle_wait) if not batch and self.idle_wait else None
        return batch

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> int | None:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class OffsetSafeKafkaSource(KafkaSource):
    """KafkaSource with the lighter, offset-safe partitions above."""

    def __init__(self, *args: Any, idle_wait: timedelta = IDLE_WAIT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_wait = idle_wait

    def build_part(self, step_id: str, for_part: str,
                   resume_state: int | None) -> _OffsetSafePartition:
        """bytewax's partition, read through `_OffsetSafePartition`."""
        return _OffsetSafePartition(super().build_part(step_id, for_part, resume_state),
                                    self.idle_wait)
