"""An in-memory stand-in for the request topic, for dataflows run in tests without Kafka.

The aggregator writes reservation requests (and forwarded catalog records) to `cart-reservations`
and reads that topic back as an input. `Loopback` is that topic in memory: one partition, a list
of (key, value) records that the sink appends to and the source reads in order, resuming from
its offset after a recovery. The source ends once nothing new arrived for `idle_s` (the rest of
a test flow has ended by then), which is how a bounded test run finishes.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from cart_aggregator.reserve import decode_record


class Loopback:
    """The records of one single-partition topic, shared by a sink and a source."""

    def __init__(self, topic: str = "cart-reservations", idle_s: float = 1.0) -> None:
        self.topic = topic
        self.idle_s = idle_s
        self.records: list[tuple[bytes | None, bytes]] = []
        self.lock = threading.Lock()
        self.last_write = time.monotonic()

    def append(self, items: list[tuple[Any, bytes]]) -> None:
        with self.lock:
            for key, value in items:
                self.records.append((key.encode() if isinstance(key, str) else key, value))
            self.last_write = time.monotonic()

    def decoded(self) -> list[tuple[Any, ...]]:
        """The topic's records as the reservation stage reads them, in order."""
        return [decode_record(v) for _, v in self.records]

    def sink(self) -> LoopbackSink:
        return LoopbackSink(self)

    def source(self) -> LoopbackSource:
        return LoopbackSource(self)


class _SinkPart(StatelessSinkPartition[Any]):
    def __init__(self, loop: Loopback) -> None:
        self.loop = loop

    def write_batch(self, items: list[Any]) -> None:
        self.loop.append(items)


class LoopbackSink(DynamicSink[Any]):
    def __init__(self, loop: Loopback) -> None:
        self.loop = loop

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SinkPart:
        return _SinkPart(self.loop)


class _SourcePart(StatefulSourcePartition[KafkaSourceMessage[Any, Any], int]):
    def __init__(self, loop: Loopback, offset: int | None) -> None:
        self.loop = loop
        self.offset = offset or 0
        self.started = time.monotonic()

    def next_batch(self) -> list[KafkaSourceMessage[Any, Any]]:
        with self.loop.lock:
            new = self.loop.records[self.offset:self.offset + 100]
            idle = time.monotonic() - max(self.loop.last_write, self.started)
        if not new and idle > self.loop.idle_s:
            raise StopIteration
        out = [KafkaSourceMessage(k, v, topic=self.loop.topic, partition=0,
                                  offset=self.offset + i) for i, (k, v) in enumerate(new)]
        self.offset += len(new)
        return out

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(milliseconds=5)

    def snapshot(self) -> int:
        return self.offset


class LoopbackSource(FixedPartitionedSource[KafkaSourceMessage[Any, Any], int]):
    def __init__(self, loop: Loopback) -> None:
        self.loop = loop

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _SourcePart:
        return _SourcePart(self.loop, resume_state)
