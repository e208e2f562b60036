"""Connectors: the batch loop's commit and rebalance bookkeeping, and splitting refused batches.

A fake consumer records commits; the store is a fake whose writes can be held back, so a batch
can be "in flight" when a rebalance comes (no broker, no store).
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from confluent_kafka import TopicPartition

from connectors.consumer import BatchDone, BatchLoop, Stopper, commit_offsets
from connectors.records import Poison
from connectors.sinks import write_or_split
from tests.support.connectors import FakeMessage


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[int, int]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in tps]


class HeldSink:
    """Writes block until `release` is set; `fail` makes them raise a crash."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.written: list[list[Any]] = []

    def prepare(self, batch: list[Any]) -> list[Any]:
        return batch

    def write(self, batch: list[Any]) -> list[Poison]:
        self.release.wait(5)
        self.written.append(batch)
        return []


class Dead:
    def send(self, poisons: list[Poison]) -> None:
        self.sent = poisons


def loop(sink: Any, done: list[BatchDone] | None = None) -> tuple[BatchLoop, FakeConsumer]:
    consumer = FakeConsumer()
    lp = BatchLoop(consumer, "t", sink, Dead(), Stopper(), max_backoff_s=0.05,  # type: ignore[arg-type]
                   revoke_wait_s=0.3, on_batch=done.append if done is not None else None)
    lp.on_assign(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])  # type: ignore[arg-type]
    return lp, consumer


def msgs(partition: int, *offsets: int) -> list[FakeMessage]:
    return [FakeMessage(b"x", b"k", o, partition) for o in offsets]


def test_commit_offsets_are_the_last_offset_plus_one_per_partition() -> None:
    assert commit_offsets([*msgs(0, 5, 3, 9), *msgs(1, 2)]) == {0: 10, 1: 3}
    assert commit_offsets([]) == {}


def test_a_batch_is_committed_only_after_its_write() -> None:
    sink = HeldSink()
    done: list[BatchDone] = []
    lp, consumer = loop(sink, done)
    batch = [*msgs(0, 0, 1), *msgs(1, 7)]
    lp.submit(batch, batch)
    assert consumer.commits == []  # the write is held back: nothing committed yet
    sink.release.set()
    assert lp.finish() is True
    assert consumer.commits == [{0: 2, 1: 8}]
    assert done == [BatchDone(3, 0, {0: 2, 1: 8})]


def test_revoke_commits_an_in_flight_batch_that_gets_stored_in_time() -> None:
    sink = HeldSink()
    lp, consumer = loop(sink)
    lp.submit(msgs(0, 0), msgs(0, 0))
    threading.Timer(0.05, sink.release.set).start()
    lp.on_revoke(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])  # type: ignore[arg-type]
    assert consumer.commits == [{0: 1}]
    assert lp.finish() is True
    assert consumer.commits == [{0: 1}]  # not twice


def test_revoke_drops_the_offsets_of_a_batch_not_stored_in_time() -> None:
    sink = HeldSink()
    lp, consumer = loop(sink)
    lp.submit(msgs(1, 4), msgs(1, 4))
    lp.on_revoke(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])  # type: ignore[arg-type]
    assert consumer.commits == []
    lp.on_assign(consumer, [TopicPartition("t", 1)])  # type: ignore[arg-type]
    sink.release.set()
    assert lp.finish() is True
    # Stored, but its offsets belong to the old assignment: the new one re-reads those records.
    assert consumer.commits == [] and sink.written == [msgs(1, 4)]


def test_lost_partitions_are_never_committed() -> None:
    sink = HeldSink()
    sink.release.set()
    lp, consumer = loop(sink)
    lp.submit(msgs(0, 1), msgs(0, 1))
    lp.on_lost(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    assert lp.finish() is True and consumer.commits == []


def test_commits_skip_partitions_no_longer_assigned() -> None:
    sink = HeldSink()
    sink.release.set()
    lp, consumer = loop(sink)
    lp.assigned.discard(1)
    batch = [*msgs(0, 0), *msgs(1, 0)]
    lp.submit(batch, batch)
    assert lp.finish() is True and consumer.commits == [{0: 1}]


class Crash(BaseException):
    pass


def test_a_crash_in_the_store_propagates_and_commits_nothing() -> None:
    class Crashing(HeldSink):
        def write(self, batch: list[Any]) -> list[Poison]:
            raise Crash

    lp, consumer = loop(Crashing())
    lp.submit(msgs(0, 0), msgs(0, 0))
    with pytest.raises(Crash):
        lp.finish()
    lp.on_revoke(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    assert consumer.commits == []


def test_a_stop_during_store_retries_commits_nothing() -> None:
    class Down(HeldSink):
        def write(self, batch: list[Any]) -> list[Poison]:
            raise ConnectionError("store down")

    lp, consumer = loop(Down())
    lp.submit(msgs(0, 0), msgs(0, 0))
    threading.Timer(0.2, lp.stopper.stop).start()
    assert lp.finish() is False
    assert consumer.commits == []


def test_store_failures_are_retried_until_the_store_is_back() -> None:
    calls = []

    class Flaky(HeldSink):
        def write(self, batch: list[Any]) -> list[Poison]:
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError("store down")
            return []

    lp, consumer = loop(Flaky())
    lp.submit(msgs(0, 0), msgs(0, 0))
    assert lp.finish() is True
    assert len(calls) == 3 and consumer.commits == [{0: 1}]


def test_write_or_split_isolates_the_records_the_database_refuses() -> None:
    stored: list[int] = []

    def write(items: list[int]) -> None:
        if any(i % 7 == 3 for i in items):
            raise psycopg.errors.NumericValueOutOfRange("out of range")
        stored.extend(items)

    poison = write_or_split(list(range(20)), write, lambda i: FakeMessage(b"", None, i))
    assert sorted(stored) == [i for i in range(20) if i % 7 != 3]
    assert [p.message.offset() for p in poison] == [3, 10, 17]
    assert all(p.error.reason == "STORE_REJECTED" for p in poison)


def test_write_or_split_lets_connection_errors_through() -> None:
    def write(items: list[int]) -> None:
        raise psycopg.OperationalError("server closed the connection")

    with pytest.raises(psycopg.OperationalError):
        write_or_split([1, 2], write, lambda i: i)
