"""Kafka dies under load and comes back: 503 while down, 202 after, no acked event lost or doubled.

Runs against a private broker (tests/integration/kafka_private.py), never the shared one.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from cart_contract import decode_cart_event
from cart_write.app import create_app
from cart_write.catalog import NoCatalog
from cart_write.config import Config
from cart_write.publisher import ConfluentPublisher
from infra.topics import ensure_topics, topic_specs, wait_for_broker
from tests.integration.kafka_private import PrivateKafka

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOPIC = topic_specs()[0].name


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    broker = PrivateKafka(tmp_path / "kafka")
    broker.start()
    try:
        ensure_topics(wait_for_broker(broker.bootstrap, 60), topic_specs())
        yield broker
    finally:
        broker.stop(hard=True)


def small_bounds(bootstrap: str) -> Config:
    # Tighter than production so the test spends little time waiting on a dead broker.
    return Config(kafka_bootstrap=bootstrap, topic_cart_events=TOPIC, request_timeout_ms=2000,
                  delivery_timeout_ms=3000, max_block_ms=2000, linger_ms=2)


class Writers:
    """Threads that keep adding items and record every answer."""

    def __init__(self, app: Any, prefix: str, threads: int = 4) -> None:
        self.app, self.prefix = app, prefix
        self.results: list[tuple[float, int, dict[str, Any], dict[str, str]]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(threads)]

    def _run(self, n: int) -> None:
        client = self.app.test_client()
        i = 0
        while not self.stop.is_set():
            body = {"customerId": f"{self.prefix}-{n}-{i % 7}", "itemId": "1", "qty": 1}
            resp = client.post("/api/v1/add", data=orjson.dumps(body),
                               headers={"Content-Type": "application/json"})
            with self.lock:
                self.results.append((time.monotonic(), resp.status_code, resp.get_json(),
                                     dict(resp.headers)))
            i += 1

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a request hung"

    def count(self, status: int, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for t, s, _, _ in self.results if s == status and t >= since)

    def wait_for(self, status: int, n: int, since: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count(status, since) < n:
            assert time.monotonic() < deadline, (
                f"fewer than {n} x {status} within {timeout_s}s: "
                f"{Counter(s for _, s, _, _ in self.results)}")
            time.sleep(0.05)


def read_all(bootstrap: str) -> dict[str, list[tuple[int, int]]]:
    """eventId -> every (partition, offset) it is stored at on the topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        found: dict[str, list[tuple[int, int]]] = {}
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, "could not read the topic back"
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for r in records:
                    found.setdefault(decode_cart_event(r.value).event_id, []).append(
                        (tp.partition, r.offset))
        return found
    finally:
        consumer.close()


def test_kafka_stop_gives_503_then_202_after_restart_with_no_acked_event_lost_or_doubled(
    kafka: PrivateKafka, unique: str
) -> None:
    bounds = small_bounds(kafka.bootstrap)
    publisher = ConfluentPublisher(bounds)
    app = create_app(bounds, publisher=publisher, catalog=NoCatalog())
    writers = Writers(app, f"rs-{unique}")
    writers.start()
    try:
        writers.wait_for(202, 200, since=0, timeout_s=60)

        kafka.stop(hard=True)
        down_at = time.monotonic()
        writers.wait_for(503, 8, since=down_at, timeout_s=60)
        client = app.test_client()
        time.sleep(1.1)  # readiness answers are cached for a second
        assert client.get("/readyz").status_code == 503
        # A process that starts while Kafka is down answers 503 at once, without hanging.
        fresh_publisher = ConfluentPublisher(bounds)
        fresh = create_app(bounds, publisher=fresh_publisher,
                           catalog=NoCatalog()).test_client()
        with ThreadPoolExecutor(1) as pool:
            resp = pool.submit(fresh.post, "/api/v1/clear",
                               data=orjson.dumps({"customerId": f"rs-{unique}-fresh"}),
                               headers={"Content-Type": "application/json"}).result(timeout=30)
        assert resp.status_code == 503 and resp.headers["Retry-After"]

        kafka.start()
        up_at = time.monotonic()
        writers.wait_for(202, 200, since=up_at, timeout_s=120)
        deadline = time.monotonic() + 60
        while True:
            fresh_resp = fresh.post("/api/v1/clear",
                                    data=orjson.dumps({"customerId": f"rs-{unique}-fresh"}),
                                    headers={"Content-Type": "application/json"})
            if fresh_resp.status_code == 202:
                break
            assert time.monotonic() < deadline, "a producer built while Kafka was down"
            time.sleep(0.5)
        assert fresh.get("/readyz").status_code == 200
    finally:
        writers.join()
        publisher.close()

    statuses = Counter(s for _, s, _, _ in writers.results)
    assert set(statuses) <= {202, 503}, statuses
    unavailable = [(b, h) for _, s, b, h in writers.results if s == 503]
    assert all(b["error"]["code"] == "KAFKA_UNAVAILABLE" and int(h["Retry-After"]) >= 1
               for b, h in unavailable)

    acked = [b for _, s, b, _ in writers.results if s == 202]
    acked.append(fresh_resp.get_json())
    stored = read_all(kafka.bootstrap)
    for ack in acked:
        assert stored.get(ack["eventId"]) == [(ack["partition"], ack["offset"])], ack
    # Nothing is ever stored twice, acknowledged or not (the producer is idempotent).
    assert all(len(places) == 1 for places in stored.values())
