"""Prometheus metrics of the aggregator, and consumer lag from the brokers' high watermarks.

Counters are per process; a cluster's totals are the sum over its processes. Lag is reported by
the process that reads a partition: high watermark minus the next offset it will read. Events
read but not yet folded are `..._waiting_for_product` plus `..._early_buffered`.

The keyed stages run once per key and batch, i.e. about once per event: they count into plain
per-thread integers (`tally`), summed when Prometheus scrapes, instead of a locked Counter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cart_web.metrics import LagReadiness, ProbeServer

log = logging.getLogger(__name__)

EVENTS_READ = Counter("cartstream_aggregator_events_read", "Cart events read and parsed")
PRODUCTS_READ = Counter("cartstream_aggregator_products_read", "Catalog records read")
DEAD_LETTERS = Counter("cartstream_aggregator_dead_letters", "Records sent to the dead letters",
                       ["topic", "reason"])
CONSUMER_ERRORS = Counter("cartstream_aggregator_consumer_errors",
                          "Errors reported by the Kafka consumer (skipped, librdkafka retries)")
DELIVERED = Counter("cartstream_aggregator_records_delivered",
                    "Records the broker acknowledged", ["topic"])
LAG = Gauge("cartstream_aggregator_consumer_lag",
            "High watermark minus the next offset to read", ["topic", "partition"])

# Indices of the per-thread tallies.
APPLIED, REJECTED, DUPLICATE, HELD, EARLY_ANSWERS, WAITING, WAIT_EXPIRED, RESERVATIONS = range(8)
_TALLIES = 8
_tallies: list[list[int]] = []
_local = threading.local()


def tally() -> list[int]:
    """This thread's counters; add to them in place (`tally()[HELD] += n`)."""
    t: list[int] | None = getattr(_local, "t", None)
    if t is None:
        t = _local.t = [0] * _TALLIES
        _tallies.append(t)
    return t


def total(index: int) -> int:
    """A tally summed over all threads."""
    return sum(t[index] for t in list(_tallies))


class _TallyCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        details = CounterMetricFamily("cartstream_aggregator_cart_details",
                                      "Cart-details records emitted, by the event's outcome",
                                      labels=["outcome"])
        for name, i in (("applied", APPLIED), ("rejected", REJECTED),
                        ("duplicate", DUPLICATE)):
            details.add_metric([name], total(i))
        yield details
        yield CounterMetricFamily("cartstream_aggregator_product_wait_expired",
                                  "Adds answered without a product after their wait",
                                  value=total(WAIT_EXPIRED))
        yield CounterMetricFamily("cartstream_aggregator_reservations_decided",
                                  "Checkouts the reservation stage answered (reserved or refused)",
                                  value=total(RESERVATIONS))
        yield GaugeMetricFamily("cartstream_aggregator_held_for_answer",
                                "Events held at the fold until an add before them has its product",
                                value=total(HELD))
        yield GaugeMetricFamily("cartstream_aggregator_early_answers",
                                "Products at the fold that arrived before their add",
                                value=total(EARLY_ANSWERS))
        yield GaugeMetricFamily("cartstream_aggregator_waiting_for_product",
                                "Adds waiting in the join for their product to arrive",
                                value=total(WAITING))


REGISTRY.register(_TallyCollector())

# Next offset to read per (topic, partition), as seen by this process's sources (once a batch).
positions: dict[tuple[str, int], int] = {}
# The (topic, partition)s this process's sources read; and its readiness, once serving.
assigned: set[tuple[str, int]] = set()
readiness: LagReadiness | None = None


def note_positions(batch_positions: dict[tuple[str, int], int]) -> None:
    """Record how far this process has read."""
    positions.update(batch_positions)


def note_assigned(topic: str, partition: int, next_offset: int) -> None:
    """A source of this process reads `partition` of `topic`, from `next_offset` (< 0: from its
    first record, position unknown until one is read)."""
    assigned.add((topic, partition))
    if next_offset >= 0:
        positions.setdefault((topic, partition), next_offset)
    if readiness is not None:
        readiness.note_assigned(assigned)


class LagMonitor(threading.Thread):
    """Refreshes LAG every `interval_s` from the high watermarks of the partitions read here."""

    def __init__(self, watermarks: Callable[[str, int], int], interval_s: float) -> None:
        super().__init__(name="lag-monitor", daemon=True)
        self.watermarks, self.interval_s = watermarks, interval_s
        self.stopped = threading.Event()

    def refresh(self) -> None:
        """One round: set the lag of every partition this process has read from."""
        total = 0
        for (topic, partition), next_offset in list(positions.items()):
            high = self.watermarks(topic, partition)
            lag = max(0, high - next_offset)
            LAG.labels(topic, str(partition)).set(lag)
            total += lag
        if readiness is not None:
            readiness.note_lag(total)

    def run(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception as exc:  # a metrics thread must not die
                log.warning("consumer lag refresh failed: %s", exc)
            if self.stopped.wait(self.interval_s):
                return


def kafka_watermarks(bootstrap: str) -> Callable[[str, int], int]:
    """A function giving a partition's high watermark, through one metadata-only consumer."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cartstream-aggregator-lag",
                         "enable.auto.commit": False})

    def high(topic: str, partition: int) -> int:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)[1]

    return high


def serve(host: str, port: int, *, max_lag: int, lag_interval_s: float) -> None:
    """Serve the default registry (ours and bytewax's Kafka gauges) at http://host:port/metrics,
    with /healthz and /readyz: ready once this process reads partitions and its lag, measured
    within the last three rounds of the LagMonitor, is at most `max_lag` records."""
    global readiness
    readiness = LagReadiness(max_lag, max_age_s=3 * lag_interval_s)
    readiness.note_assigned(assigned)
    ProbeServer(readiness.check).start(host, port)
