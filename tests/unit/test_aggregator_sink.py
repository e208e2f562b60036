"""The delivery-checked sink (with a fake producer) and the metrics helpers."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from cart_aggregator import metrics
from cart_aggregator.sink import DeliveredKafkaSink, DeliveryFailed, producer_config


class FakeMessage:
    def __init__(self, key: bytes | None) -> None:
        self._key = key

    def key(self) -> bytes | None:
        return self._key


class FakeProducer:
    """Records what was produced; `refuse` keys fail, `stuck` keys never get acknowledged."""

    def __init__(self, config: dict[str, Any], refuse: set[bytes] = frozenset(),
                 stuck: set[bytes] = frozenset(), full_once: bool = False) -> None:
        self.config, self.refuse, self.stuck, self.full_once = config, refuse, stuck, full_once
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.pending: list[tuple[bytes | None, Any]] = []
        self.flushes = 0

    def produce(self, topic: str, value: Any = None, key: Any = None,
                on_delivery: Any = None) -> None:
        if self.full_once:
            self.full_once = False
            raise BufferError("queue full")
        self.sent.append((topic, key, value))
        # Like librdkafka: without a callback of its own, a record gets the configured one.
        self.pending.append((key, on_delivery or self.config["on_delivery"]))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.flushes += 1
        remaining = []
        for key, cb in self.pending:
            if key in self.stuck:
                remaining.append((key, cb))
            elif key in self.refuse:
                cb("MSG_TIMED_OUT", FakeMessage(key))
        self.pending = remaining
        return len(remaining)


def build(**fake: Any) -> tuple[Any, list[FakeProducer]]:
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config, **fake))
        return made[-1]

    sink = DeliveredKafkaSink("k:9092", "details", 2.0, producer_factory=factory)
    return sink.build("out", 0, 1), made


def test_the_producer_is_idempotent_and_waits_for_all_replicas() -> None:
    cfg = producer_config("k:9092", 30)
    assert cfg["acks"] == "all" and cfg["enable.idempotence"] is True
    assert cfg["message.timeout.ms"] == 30_000
    # Failures still reach the callback; successes need no Python call per record.
    assert cfg["delivery.report.only.error"] is True


def test_a_batch_returns_once_everything_is_acknowledged() -> None:
    part, (producer,) = build()
    before = REGISTRY.get_sample_value("cartstream_aggregator_records_delivered_total",
                                       {"topic": "details"}) or 0
    part.write_batch([(b"c1", b"v1"), (b"c2", b"v2")])
    assert producer.sent == [("details", b"c1", b"v1"), ("details", b"c2", b"v2")]
    assert producer.flushes == 1 and producer.pending == []
    assert REGISTRY.get_sample_value("cartstream_aggregator_records_delivered_total",
                                     {"topic": "details"}) == before + 2


def test_a_refused_record_stops_the_flow() -> None:
    part, _ = build(refuse={b"c2"})
    with pytest.raises(DeliveryFailed, match="1 refused"):
        part.write_batch([(b"c1", b"v1"), (b"c2", b"v2")])


def test_an_unacknowledged_record_stops_the_flow() -> None:
    part, _ = build(stuck={b"c1"})
    with pytest.raises(DeliveryFailed, match="1 records unacknowledged"):
        part.write_batch([(b"c1", b"v1")])


def test_a_full_local_queue_is_waited_out_not_dropped() -> None:
    part, (producer,) = build(full_once=True)
    part.write_batch([(b"c1", b"v1")])
    assert producer.sent == [("details", b"c1", b"v1")]


def test_lag_is_the_high_watermark_minus_the_next_offset_to_read() -> None:
    metrics.note_positions({("lag-topic", 0): 40, ("lag-topic", 1): 7})
    highs = {("lag-topic", 0): 100, ("lag-topic", 1): 7}
    monitor = metrics.LagMonitor(lambda topic, p: highs.get((topic, p), 0), 60)
    monitor.refresh()
    lag = {p: REGISTRY.get_sample_value("cartstream_aggregator_consumer_lag",
                                        {"topic": "lag-topic", "partition": p})
           for p in ("0", "1")}
    assert lag == {"0": 60, "1": 0}


def test_tallies_are_summed_over_threads_when_scraped() -> None:
    import threading

    before = metrics.total(metrics.HELD)

    def work() -> None:
        metrics.tally()[metrics.HELD] += 5

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert metrics.total(metrics.HELD) == before + 15
    assert REGISTRY.get_sample_value("cartstream_aggregator_held_for_answer") == before + 15


class ConsumedMessage:
    """A confluent_kafka Message: accessors, and error() for a consumer error."""

    def __init__(self, offset: int, error: Any = None) -> None:
        self._offset, self._error = offset, error

    def error(self) -> Any:
        return self._error

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class FakeConsumer:
    def __init__(self, batches: list[list[ConsumedMessage]]) -> None:
        self.batches = batches

    def consume(self, num_messages: int, timeout: float) -> list[ConsumedMessage]:
        return self.batches.pop(0)


def partition(offset: int, batches: list[list[ConsumedMessage]], raise_on_errors: bool = False,
              idle_wait: Any = None) -> Any:
    from datetime import timedelta

    from cart_aggregator.sources import KafkaPartition

    return KafkaPartition(FakeConsumer(batches), "t", 0, offset, 10, raise_on_errors,
                          timedelta(milliseconds=10) if idle_wait is None else idle_wait)


class FakeError:
    """A consumer error such as a transport failure (not the end of a partition)."""

    def code(self) -> int:
        return -195


def test_a_consumer_error_never_becomes_the_resume_offset() -> None:
    from bytewax.connectors.kafka import KafkaError

    from cart_aggregator.sources import SourceMessage

    error = ConsumedMessage(-1001, FakeError())  # offset OFFSET_INVALID
    part = partition(-2, [[ConsumedMessage(0), ConsumedMessage(1), error], [error],
                          [ConsumedMessage(2)], []])
    batch = part.next_batch()
    assert batch[:2] == [SourceMessage(b"k", b"v", "t", 0, 0), SourceMessage(b"k", b"v", "t", 0, 1)]
    assert type(batch[2]) is KafkaError and batch[2].msg.offset == -1001
    assert part.snapshot() == 2
    part.next_batch()
    assert part.snapshot() == 2  # not -1000, librdkafka's OFFSET_STORED
    part.next_batch()
    assert part.snapshot() == 3
    assert part.next_batch() == [] and part.snapshot() == 3


def test_partition_end_and_fatal_errors_follow_bytewax() -> None:
    from confluent_kafka import KafkaError as ConfluentKafkaError

    class EndOfPartition:
        def code(self) -> int:
            return ConfluentKafkaError._PARTITION_EOF

    part = partition(
        0, [[ConsumedMessage(0), ConsumedMessage(1, EndOfPartition()), ConsumedMessage(2)]])
    assert [m.offset for m in part.next_batch()] == [0]  # the batch up to the end, then stop
    with pytest.raises(StopIteration):
        part.next_batch()
    failing = partition(
        0, [[ConsumedMessage(0), ConsumedMessage(-1001, FakeError())]], raise_on_errors=True)
    with pytest.raises(RuntimeError, match="error consuming"):
        failing.next_batch()


def test_an_empty_poll_lets_the_worker_sleep_and_a_full_one_does_not() -> None:
    from datetime import UTC, datetime, timedelta

    part = partition(0, [[], [ConsumedMessage(0)], []], idle_wait=timedelta(milliseconds=10))
    assert part.next_awake() is None  # a new partition is polled at once
    before = datetime.now(UTC)
    assert part.next_batch() == []
    awake = part.next_awake()
    # The next 10 ms tick of the clock: every idle partition wakes on the same ones.
    assert awake is not None and before < awake <= datetime.now(UTC) + timedelta(milliseconds=10)
    assert round(awake.timestamp() * 1000) % 10 == 0
    assert len(part.next_batch()) == 1 and part.next_awake() is None  # a backlog: no wait
    never = partition(0, [[]], idle_wait=timedelta(0))
    assert never.next_batch() == [] and never.next_awake() is None
