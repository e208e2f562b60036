"""A sink's Prometheus metrics, consumer lag and readiness, on its own port (docs/operations.md).

Counted from the consume loop's callbacks (`on_batch`, `on_assignment`: once per batch, not per
record). The lag is measured by a thread of its own, so it keeps growing in the metrics while
the loop is stuck retrying a store that is down: high watermark minus the group's committed
offset, for the partitions this process owns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge, Histogram

from cart_web.metrics import LagReadiness, ProbeServer
from connectors.consumer import BatchDone

log = logging.getLogger(__name__)

RECORDS = Counter("cartstream_sink_records",
                  "Records handled: stored, or dead-lettered, and committed", ["sink"])
DEAD_LETTERS = Counter("cartstream_sink_dead_letters",
                       "Records sent to the dead-letter topic, by reason code", ["sink", "reason"])
BATCH_SECONDS = Histogram("cartstream_sink_batch_duration_seconds",
                          "Store write and dead letters of one batch, retries included",
                          ["sink"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                             0.5, 1.0, 2.5, 10.0, 60.0))
LAG = Gauge("cartstream_sink_consumer_lag",
            "High watermark minus the committed offset, per partition this process owns",
            ["sink", "partition"])
ASSIGNED = Gauge("cartstream_sink_assigned_partitions", "Partitions this process owns", ["sink"])

# partitions -> {partition: (committed offset or < 0 for none, low watermark, high watermark)}
Offsets = Callable[[Iterable[int]], dict[int, tuple[int, int, int]]]


def partition_lag(committed: int, low: int, high: int) -> int:
    """Records not yet stored; with no commit the group starts at the low watermark."""
    start = low if committed < 0 else max(committed, low)
    return max(0, high - start)


class SinkMetrics:
    """The loop's callbacks: count batches and dead letters, track the assignment."""

    def __init__(self, sink: str, readiness: LagReadiness) -> None:
        self.sink, self.readiness = sink, readiness
        self._records = RECORDS.labels(sink)
        self._seconds = BATCH_SECONDS.labels(sink)
        self._assigned = ASSIGNED.labels(sink)

    def on_batch(self, done: BatchDone) -> None:
        """One stored (and committed) batch."""
        self._records.inc(done.records)
        self._seconds.observe(done.seconds)
        for reason in done.reasons:
            DEAD_LETTERS.labels(self.sink, reason).inc()

    def on_assignment(self, partitions: frozenset[int]) -> None:
        """The partitions this process owns now."""
        self.readiness.note_assigned(partitions)
        self._assigned.set(len(partitions))


class LagMonitor(threading.Thread):
    """Every `interval_s`, the lag of the owned partitions: the gauges and readiness's total."""

    def __init__(self, sink: str, offsets: Offsets, readiness: LagReadiness, interval_s: float,
                 stopped: threading.Event) -> None:
        super().__init__(name=f"{sink}-lag", daemon=True)
        self.sink, self.offsets, self.readiness = sink, offsets, readiness
        self.interval_s, self.stopped = interval_s, stopped
        self._shown: set[int] = set()

    def refresh(self) -> None:
        """One measurement; raises when the brokers do not answer (readiness then ages out)."""
        owned = sorted(self.readiness.assigned)
        lags = {p: partition_lag(*o) for p, o in self.offsets(owned).items()} if owned else {}
        for p in self._shown - set(lags):
            LAG.remove(self.sink, str(p))  # a partition another member owns now
        for p, lag in lags.items():
            LAG.labels(self.sink, str(p)).set(lag)
        self._shown = set(lags)
        self.readiness.note_lag(sum(lags.values()))

    def run(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception as exc:  # a metrics thread must not die
                log.warning("%s sink: consumer lag not measured: %s", self.sink, exc)
            if self.stopped.wait(self.interval_s):
                return


def kafka_offsets(bootstrap: str, topic: str, group: str, timeout_s: float = 5.0) -> Offsets:
    """Committed offsets and watermarks of `topic` for `group`, through a consumer that never
    joins the group (it only asks the coordinator and the partition leaders)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})

    def offsets(partitions: Iterable[int]) -> dict[int, tuple[int, int, int]]:
        tps = [TopicPartition(topic, p) for p in partitions]
        result = {}
        for tp in consumer.committed(tps, timeout=timeout_s):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition),
                                                       timeout=timeout_s)
            result[tp.partition] = (tp.offset, low, high)
        return result

    return offsets


def start(sink: str, host: str, port: int, offsets: Offsets, *, max_lag: int,
          interval_s: float, stopped: threading.Event) -> SinkMetrics:
    """Serve /metrics, /healthz and /readyz of one sink and start measuring its lag.

    A port that is taken is logged, and the sink runs without it: storing records matters more
    than reporting on them (Prometheus shows the target down).
    """
    readiness = LagReadiness(max_lag, max_age_s=3 * interval_s)
    try:
        ProbeServer(readiness.check).start(host, port)
    except OSError as exc:
        log.error("%s sink: metrics port %s:%d not available (%s); running without it",
                  sink, host, port, exc)
    LagMonitor(sink, offsets, readiness, interval_s, stopped).start()
    return SinkMetrics(sink, readiness)
