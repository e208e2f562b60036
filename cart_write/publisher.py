"""Publishing events to Kafka and waiting for the broker's acknowledgement, within bounds.

The write API produces with confluent-kafka (librdkafka) only: measured, it costs a request
about 40% less CPU than kafka-python did (bench/write_api.py).

How a request waits (measured with bench/write_api.py, docs/architecture.md "Where the time
goes"): each request holds a plain lock that the poll thread releases once its delivery report
is in. The delivery callback, which librdkafka runs once per record on the poll thread (taking
the GIL each time), only notes the outcome; the poll thread wakes the waiters after each poll
batch. A threading.Event per request (a Condition, a second lock, the waiter woken inside the
callback) cost ~0.06 ms of API CPU per acknowledged add more (-14 %, median of 12 alternating
pairs). Most of what Kafka adds is the waiting itself: a request parked on its thread.
"""

from __future__ import annotations

import _thread
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from cart_write import metrics
from cart_write.config import Config

log = logging.getLogger("cart_write.publisher")

_ALL_BROKERS_DOWN = KafkaError._ALL_BROKERS_DOWN


@dataclass(frozen=True)
class Ack:
    """Where the broker stored an acknowledged record."""

    partition: int
    offset: int


class PublishUnavailable(Exception):
    """Kafka did not acknowledge the record within the bounds; the caller answers 503."""


class Publisher(Protocol):
    """What the HTTP layer needs from Kafka (a fake in unit tests)."""

    def publish(self, topic: str, key: bytes, value: bytes) -> Ack:
        """Send one record and return its position once acknowledged; raise PublishUnavailable."""
        ...

    def ready(self) -> bool:
        """True when the broker answers."""
        ...

    def close(self) -> None:
        """Flush and release the connection."""
        ...


class _Readiness:
    """Whether Kafka answered lately: a recent ack, else a probe's answer reused for CACHE_S.

    Probes are serialised and cached so readiness checks cannot flood the broker.
    """

    CACHE_S = 1.0

    def __init__(self, probe: Callable[[], bool]) -> None:
        self._probe = probe
        self._lock = threading.Lock()
        self._last_ok = 0.0
        self._at = 0.0
        self._value = False

    def acked(self) -> None:
        """Note a record the broker acknowledged just now."""
        self._last_ok = time.monotonic()

    def __call__(self) -> bool:
        """True after a recent ack, else the (cached) probe's answer."""
        if time.monotonic() - self._last_ok < self.CACHE_S:
            return True
        with self._lock:
            if time.monotonic() - self._at >= self.CACHE_S:
                self._value = self._probe()
                self._at = time.monotonic()
            return self._value


def confluent_settings(config: Config) -> dict[str, Any]:
    """librdkafka producer settings: durable, idempotent, and bounded in time."""
    return {
        "bootstrap.servers": config.kafka_bootstrap,
        "client.id": "cart-write",
        "acks": "all",
        "enable.idempotence": True,
        # Java's (and kafka-python's) choice of partition for a key: a customer's events land
        # on the partition any other client would pick (librdkafka's default is CRC32).
        "partitioner": "murmur2_random",
        "linger.ms": config.linger_ms,
        "batch.size": config.batch_size,
        "request.timeout.ms": config.request_timeout_ms,
        # A record not acknowledged within this fails its request with 503 (never a hang).
        "message.timeout.ms": config.delivery_timeout_ms,
        "reconnect.backoff.max.ms": 1000,
        "socket.connection.setup.timeout.ms": max(1000, config.max_block_ms),
        # librdkafka logs every failed reconnect; error_cb says it once. Under "kafka", which
        # the server's logging config keeps quiet.
        "logger": logging.getLogger("kafka.librdkafka"),
    }


class _Delivery:
    """One record's outcome, noted by librdkafka's delivery callback.

    `done` is held (locked) from creation; releasing it wakes the request waiting on it. The
    callback does not release it: it queues the delivery on `settled`, and whoever served the
    callbacks (the poll thread, or close()'s flush) releases the batch (_wake_settled).
    """

    __slots__ = ("done", "error", "partition", "offset", "_settled")

    def __init__(self, settled: list[_Delivery]) -> None:
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.error: Any = None
        self.partition = self.offset = -1
        self._settled = settled

    def __call__(self, error: Any, msg: Any) -> None:
        if error is None:
            self.partition, self.offset = msg.partition(), msg.offset()
        else:
            self.error = error
        self._settled.append(self)


def _wake_settled(settled: list[_Delivery]) -> None:
    """Wake the requests whose records were settled (each is popped, so released once)."""
    while settled:
        settled.pop().done.release()


class ConfluentPublisher:
    """One confluent-kafka (librdkafka) producer per process, created on first use.

    librdkafka batches, sends and retries on its own threads without the GIL. A poll thread
    runs the delivery callbacks, then wakes the requests they settled.
    While all brokers are down (librdkafka says so through error_cb) requests fail at once
    with PublishUnavailable, except one every PROBE_EVERY_S that goes through to find out
    whether Kafka is back; any acknowledged record ends the outage.
    """

    PROBE_EVERY_S = 1.0
    POLL_S = 0.05

    def __init__(self, config: Config,
                 producer_factory: Callable[[dict[str, Any]], Any] = Producer) -> None:
        self._config = config
        self._producer_factory = producer_factory
        self._lock = threading.Lock()
        self._producer: Any = None
        self._pid = 0
        self._closed = threading.Event()
        self._unreachable = False
        self._probe_at = 0.0
        self._readiness = _Readiness(self._probe)
        # Deliveries whose callback ran and whose request is not woken yet (list operations
        # are atomic under the GIL; each is appended once and popped once).
        self._settled: list[_Delivery] = []

    def _get_producer(self) -> Any:
        producer = self._producer
        if producer is not None and self._pid == os.getpid():
            return producer
        with self._lock:
            if self._producer is None or self._pid != os.getpid():
                settings = {**confluent_settings(self._config), "error_cb": self._on_error}
                self._producer, self._pid = self._producer_factory(settings), os.getpid()
                threading.Thread(target=self._poll, args=(self._producer,),
                                 name="cart-write-delivery", daemon=True).start()
                log.info("Kafka producer (librdkafka) for %s (pid %d)",
                         self._config.kafka_bootstrap, self._pid)
            return self._producer

    def _poll(self, producer: Any) -> None:
        # Runs the delivery callbacks, then wakes their requests; ends when the producer is
        # closed or replaced.
        settled = self._settled
        while not self._closed.is_set() and self._producer is producer:
            producer.poll(self.POLL_S)
            _wake_settled(settled)

    def _on_error(self, error: Any) -> None:
        code = error.code()
        if code == _ALL_BROKERS_DOWN:
            if not self._unreachable:
                log.warning("Kafka at %s unreachable: %s", self._config.kafka_bootstrap, error)
            self._unreachable = True
        elif error.fatal():
            log.error("Kafka producer failed, replacing it: %s", error)
            with self._lock:
                self._producer = None  # the next request builds a fresh one
        else:
            log.info("Kafka producer: %s", error)

    def _admit(self) -> None:
        if not self._unreachable:
            return
        now = time.monotonic()
        with self._lock:
            if now < self._probe_at:
                metrics.PRODUCE_ERROR[metrics.UNREACHABLE].inc()
                raise PublishUnavailable("Kafka is unreachable (all brokers down)")
            self._probe_at = now + self.PROBE_EVERY_S

    def publish(self, topic: str, key: bytes, value: bytes) -> Ack:
        """Send one record and wait (bounded) for acks=all; raise PublishUnavailable."""
        self._admit()
        producer = self._get_producer()
        delivery = _Delivery(self._settled)
        try:
            producer.produce(topic, value, key, on_delivery=delivery)
        except BufferError as exc:
            metrics.PRODUCE_ERROR[metrics.QUEUE_FULL].inc()
            raise PublishUnavailable("too many records waiting for Kafka") from exc
        except KafkaException as exc:
            metrics.PRODUCE_ERROR[metrics.REFUSED].inc()
            raise PublishUnavailable(f"Kafka refused the record: {exc}") from exc
        if not delivery.done.acquire(True, self._config.ack_timeout_s):
            metrics.PRODUCE_ERROR[metrics.ACK_TIMEOUT].inc()
            raise PublishUnavailable("Kafka did not acknowledge in time")
        if delivery.error is not None:
            metrics.PRODUCE_ERROR[metrics.NOT_ACKNOWLEDGED].inc()
            raise PublishUnavailable(f"Kafka did not acknowledge: {delivery.error}")
        self._unreachable = False
        self._readiness.acked()
        return Ack(partition=delivery.partition, offset=delivery.offset)

    def ready(self) -> bool:
        """True when a broker answered recently: a successful ack or a fresh metadata request."""
        return self._readiness()

    def _probe(self) -> bool:
        try:
            self._get_producer().list_topics(self._config.topic_cart_events,
                                             timeout=self._config.request_timeout_ms / 1000)
            return True
        except KafkaException as exc:
            log.warning("readiness: Kafka at %s did not answer: %s",
                        self._config.kafka_bootstrap, exc)
            return False

    def close(self) -> None:
        """Flush what is buffered (bounded) and stop the poll thread."""
        self._closed.set()
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None and self._pid == os.getpid():
            remaining = producer.flush(self._config.ack_timeout_s)
            _wake_settled(self._settled)  # flush ran the last callbacks on this thread
            if remaining:
                log.warning("closing with %d record(s) not acknowledged", remaining)
