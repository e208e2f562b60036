"""A Kafka sink that confirms every record was delivered before the epoch can complete.

Bytewax's stock KafkaSink flushes without looking at delivery reports, so a refused record
would be dropped silently. Here a batch returns only when the broker acknowledged all of it
(acks=all, idempotent producer); otherwise the worker raises and the flow stops, to resume from
the last snapshot.
"""

from __future__ import annotations

import logging

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger(__name__)

Record = tuple[bytes | None, bytes]


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge some records."""


class _Partition(StatelessSinkPartition[Record]):
    def __init__(self, bootstrap: str, topic: str, flush_timeout_s: float) -> None:
        self.topic, self.flush_timeout_s = topic, flush_timeout_s
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
        })
        self.failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failures.append(f"{msg.topic()} key={msg.key()!r}: {err}")

    def write_batch(self, items: list[Record]) -> None:
        for key, value in items:
            while True:
                try:
                    self.producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.05)  # local queue full: wait for deliveries
        # The epoch (and the input offsets in its snapshot) must not move past undelivered output.
        remaining = self.producer.flush(self.flush_timeout_s)
        if remaining or self.failures:
            raise DeliveryFailed(
                f"{remaining} records unacknowledged, failures: {self.failures[:3]}"
            )

    def close(self) -> None:
        self.producer.flush(self.flush_timeout_s)


class DeliveredKafkaSink(DynamicSink[Record]):
    """Writes (key, value) pairs to one topic and fails loudly rather than drop any."""

    def __init__(self, bootstrap: str, topic: str, flush_timeout_s: float = 60.0) -> None:
        self.bootstrap, self.topic, self.flush_timeout_s = bootstrap, topic, flush_timeout_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        """One producer per worker."""
        return _Partition(self.bootstrap, self.topic, self.flush_timeout_s)
