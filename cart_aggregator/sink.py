"""A Kafka sink that returns from a batch only once the broker acknowledged every record.

Bytewax's stock KafkaSink flushes without reading delivery reports, so a refused record is
dropped silently. Here every record has a delivery callback (the producer's default one), the
producer is idempotent with acks=all, and `write_batch` waits for the whole batch: a failure or
a timeout raises, the dataflow stops, and a restart resumes from the last snapshot, whose input
offsets never pass undelivered output (bytewax completes an epoch only after its writes
returned).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from cart_aggregator import metrics
from cart_contract.settings import client_config

log = logging.getLogger(__name__)

# (key, value); a str key is written as its UTF-8 bytes.
Record = tuple[str | bytes | None, bytes | None]


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge some records."""


class ProducerLike(Protocol):
    """The part of confluent_kafka.Producer the sink uses (tests pass a fake)."""

    def produce(self, topic: str, value: Any = ..., key: Any = ...,
                on_delivery: Any = ...) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...


def producer_config(kafka: str | Mapping[str, Any], delivery_timeout_s: float) -> dict[str, Any]:
    """librdkafka settings: no loss, no duplicates from retries, order kept per partition.

    `kafka`: bootstrap servers, or a client config (`KafkaClientSettings.kafka_client`).
    """
    return {
        **client_config(kafka),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 200_000,
        "message.timeout.ms": int(delivery_timeout_s * 1000),
        # Failures still reach the callback; successes need no Python call per record.
        "delivery.report.only.error": True,
    }


def kafka_producer(config: dict[str, Any]) -> ProducerLike:
    """A confluent_kafka Producer."""
    from confluent_kafka import Producer

    return Producer(config)


class _Partition(StatelessSinkPartition[Record]):
    def __init__(self, producer: ProducerLike, topic: str, flush_timeout_s: float,
                 failures: list[str]) -> None:
        self.producer, self.topic, self.flush_timeout_s = producer, topic, flush_timeout_s
        # Filled by the producer's delivery callback (`_recorder`).
        self.failures = failures
        self.acked = metrics.DELIVERED.labels(topic)

    def write_batch(self, items: list[Record]) -> None:
        produce, topic = self.producer.produce, self.topic
        for key, value in items:
            while True:
                try:
                    # The delivery callback is the producer's default (see `build`): passing
                    # it with every record costs ~0.6 µs a record.
                    produce(topic, value, key)
                    break
                except BufferError:
                    self.producer.poll(0.05)  # local queue full: serve deliveries, then retry
        # Return only when every record of the batch is acknowledged (or fail loudly).
        remaining = self.producer.flush(self.flush_timeout_s)
        if remaining or self.failures:
            raise DeliveryFailed(
                f"{topic}: {remaining} records unacknowledged after {self.flush_timeout_s}s, "
                f"{len(self.failures)} refused, e.g. {self.failures[:3]}"
            )
        self.acked.inc(len(items))

    def close(self) -> None:
        remaining = self.producer.flush(self.flush_timeout_s)
        if remaining or self.failures:
            log.error("%s: %d records unacknowledged at close, %d refused", self.topic,
                      remaining, len(self.failures))


def _recorder(failures: list[str]) -> Callable[[Any, Any], None]:
    """A delivery callback that notes every refused record in `failures`."""

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(f"key={msg.key()!r}: {err}")

    return on_delivery


class DeliveredKafkaSink(DynamicSink[Record]):
    """Writes (key, value) pairs to one topic; fails rather than drop a record."""

    def __init__(
        self,
        bootstrap: str | Mapping[str, Any],
        topic: str,
        delivery_timeout_s: float = 60.0,
        producer_factory: Callable[[dict[str, Any]], ProducerLike] = kafka_producer,
    ) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.delivery_timeout_s = delivery_timeout_s
        self.producer_factory = producer_factory

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        """One idempotent producer per worker (a customer's records all come from one worker)."""
        failures: list[str] = []
        config = producer_config(self.bootstrap, self.delivery_timeout_s)
        config["on_delivery"] = _recorder(failures)  # every record's default callback
        producer = self.producer_factory(config)
        # librdkafka gives up on a record after message.timeout.ms; wait a little longer.
        return _Partition(producer, self.topic, self.delivery_timeout_s + 5, failures)
