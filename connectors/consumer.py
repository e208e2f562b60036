"""The at-least-once consume loop every sink shares: batch, store, then commit."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from cart_contract import dead_letter_from_error, encode_dead_letter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Poison:
    """A record the sink cannot use, and why."""

    message: Message
    error: Exception


# A store write: takes a batch, returns the records it refused; raises when the store is down.
StoreBatch = Callable[[Sequence[Message]], list[Poison]]


class DeadLetters:
    """Writes poison records to the dead-letter topic and waits until the broker has them."""

    def __init__(self, bootstrap: str, topic: str, stage: str) -> None:
        self.topic, self.stage = topic, stage
        self._producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                   "enable.idempotence": True})

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
        if self._producer.flush(30) or failures:
            raise RuntimeError(f"dead-letter delivery failed: {failures or 'timeout'}")


class Stopper:
    """Turns SIGTERM/SIGINT into a flag the loop checks between batches."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> Stopper:
        """Route the signals to this stopper (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.event.set())
        return self

    @property
    def stopped(self) -> bool:
        """Whether a stop was asked for."""
        return self.event.is_set()


def with_retry(write: Callable[[], list[Poison]], what: str, stopper: Stopper,
               max_backoff_s: float) -> list[Poison] | None:
    """Run `write` until it succeeds, backing off; None when stopped before it did."""
    delay = 0.1
    while True:
        try:
            return write()
        except Exception as exc:  # noqa: BLE001 - any store failure means: wait and retry
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc,
                        delay)
        if stopper.event.wait(delay):
            return None
        delay = min(delay * 2, max_backoff_s)


def run(
    *,
    bootstrap: str,
    topic: str,
    group: str,
    store: StoreBatch,
    dead_letters: DeadLetters,
    stopper: Stopper,
    batch_max: int = 5000,
    batch_wait_s: float = 0.05,
    max_backoff_s: float = 5.0,
    on_batch: Callable[[int], None] | None = None,
    until: dict[int, int] | None = None,
) -> None:
    """Consume `topic` in batches: store each batch, dead-letter its poison, then commit.

    With `until` (partition -> end offset) it returns once every partition got there.
    """
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # Stored offsets advance only as we consume; we commit them after the store write.
        "enable.auto.offset.store": True,
        "session.timeout.ms": 45000,
    })
    consumer.subscribe([topic])
    log.info("consuming %s as group %s", topic, group)
    try:
        while not stopper.stopped:
            msgs = consumer.consume(num_messages=batch_max, timeout=batch_wait_s)
            batch = [m for m in msgs if m.error() is None]
            for m in msgs:
                if m.error() is not None and m.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", m.error())
            if not batch:
                continue
            poisons = with_retry(lambda b=batch: store(b), f"store write of {len(batch)}",
                                 stopper, max_backoff_s)
            if poisons is None:
                return  # stopped mid-retry: nothing committed, the batch comes again
            if poisons and with_retry(lambda p=poisons: dead_letters.send(p) or [],
                                      "dead-letter write", stopper, max_backoff_s) is None:
                return
            # Only now are these records safe: commit their offsets.
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:
                # E.g. a rebalance took the partitions: they are re-read, and re-storing is a no-op.
                log.warning("offset commit failed, records will be re-read: %s", exc)
            if on_batch:
                on_batch(len(batch))
            if until is not None and _caught_up(consumer, topic, until):
                return
    finally:
        consumer.close()


def _caught_up(consumer: Consumer, topic: str, until: dict[int, int]) -> bool:
    positions = consumer.position([TopicPartition(topic, p) for p in until])
    return all(tp.offset >= until[tp.partition] for tp in positions)


def setup_logging() -> None:
    """Plain timestamped logs on stderr."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("confluent_kafka").setLevel(logging.WARNING)
    time.tzset()
