"""The aggregator on real Kafka: its carts equal the fold of the log, through kill -9 and restarts.

Each test creates its own topics and runs `cartstream aggregate` as a subprocess with its
recovery directory under tmp_path.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cart_aggregator.reserve import decode_record
from cart_aggregator.sink import DeliveredKafkaSink, DeliveryFailed
from cart_contract import (
    CartEvent,
    ContractError,
    EventPosition,
    EventType,
    Product,
    decode_cart_details,
    decode_cart_event,
    decode_dead_letter,
    encode_cart_details,
    encode_cart_event,
    encode_product,
    new_cart_event,
)
from tests.support.connectors import create_topics, wait_until
from tests.support.fold_model import ReservationModel, apply, fold, to_cart_details
from tests.support.ports import free_port, free_port_block

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def make_topics(bootstrap: str, tag: str, partitions: int = 3) -> dict[str, str]:
    names = {"TOPIC_CART_EVENTS": (f"agg-{tag}-events", partitions),
             "TOPIC_PRODUCTS": (f"agg-{tag}-products", 2),
             "TOPIC_CART_DETAILS": (f"agg-{tag}-details", partitions),
             "TOPIC_DEAD_LETTER": (f"agg-{tag}-dead", 1),
             "TOPIC_CART_RESERVATIONS": (f"agg-{tag}-reservations", 1),
             "TOPIC_PRODUCT_RESERVATIONS": (f"agg-{tag}-reserved", 2)}
    # It waits for the broker's metadata too: Topic() reads the partitions from there.
    create_topics(bootstrap, dict(names.values()))
    return {k: n for k, (n, _) in names.items()}


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, value, key)
        producer.poll(0)
    assert producer.flush(60) == 0


def events_of(events: list[CartEvent]) -> list[tuple[bytes, bytes]]:
    return [(e.customer_id.encode(), encode_cart_event(e)) for e in events]


def products_of(products: list[Product]) -> list[tuple[bytes, bytes]]:
    return [(p.product_id.encode(), encode_product(p)) for p in products]


class Topic:
    """Follows a topic from its beginning, keeping every record read so far."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "enable.auto.commit": False,
                                  "group.id": f"test-{uuid.uuid4()}"})
        self.topic = topic
        self.partitions = list(self.consumer.list_topics(topic, timeout=10)
                               .topics[topic].partitions)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                              for p in self.partitions])
        self.records: list = []

    def read_to_end(self, timeout: float = 30) -> None:
        """Poll until every partition has been read up to its current high watermark."""
        ends = {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                       timeout=10)[1] for p in self.partitions}
        deadline = time.monotonic() + timeout
        while True:
            done = {p: -1 for p in self.partitions}
            for m in self.records:
                done[m.partition()] = max(done[m.partition()], m.offset())
            if all(done[p] >= ends[p] - 1 for p in self.partitions):
                return
            assert time.monotonic() < deadline, f"could not read {self.topic} to its end"
            self.poll()

    def poll(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msgs = self.consumer.consume(10_000, timeout=0.2)
            self.records += [m for m in msgs if m.error() is None]
            if not msgs:
                return

    def close(self) -> None:
        self.consumer.close()


class Carts(Topic):
    """A cart-details topic: the latest record (raw bytes) and every version per customer."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.latest: dict[str, tuple[int, bytes]] = {}
        self.versions: dict[str, set[int]] = {}

    def poll(self, seconds: float = 0.5) -> None:
        start = len(self.records)
        super().poll(seconds)
        for m in self.records[start:]:
            c = decode_cart_details(m.value())
            self.versions.setdefault(c.customer_id, set()).add(c.customer_version)
            if c.customer_version > self.latest.get(c.customer_id, (0, b""))[0]:
                self.latest[c.customer_id] = (c.customer_version, m.value())

    def wait_for(self, expected: dict[str, bytes], proc: subprocess.Popen[bytes], log: Path,
                 timeout: float = 60) -> None:
        """Poll until every expected customer's latest record has the expected version."""
        want = {c: decode_cart_details(v).customer_version for c, v in expected.items()}
        deadline = time.monotonic() + timeout
        while any(self.latest.get(c, (0, b""))[0] < v for c, v in want.items()):
            assert proc.poll() is None, f"aggregator exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "aggregator did not catch up"
            self.poll()

    def got(self, customers: list[str]) -> dict[str, bytes]:
        return {c: self.latest[c][1] for c in customers if c in self.latest}


def oracle(bootstrap: str, topic: str, catalog_at: Callable[[CartEvent], Product | None],
           reservations: str | None = None, timeout: float = 180) -> dict[str, bytes]:
    """The fold of the events topic as stored, encoded as the aggregator must publish it.

    Each checkout's answer is the reservation model's decision over the request topic
    (`reservations`) as stored; until every checkout's request is in it, this waits.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _oracle(bootstrap, topic, catalog_at, reservations)
        except KeyError:  # a checkout whose request is not in the topic yet
            assert time.monotonic() < deadline, "checkouts never asked for their reservation"
            time.sleep(0.5)


def _oracle(bootstrap: str, topic: str, catalog_at: Callable[[CartEvent], Product | None],
            reservations: str | None) -> dict[str, bytes]:
    model = ReservationModel()
    if reservations:
        requests = Topic(bootstrap, reservations)
        requests.read_to_end()
        requests.close()
        for m in sorted(requests.records, key=lambda m: m.offset()):
            model.feed(decode_record(m.value()))
    log = Topic(bootstrap, topic)
    log.read_to_end()
    log.close()
    positioned = []
    for m in sorted(log.records, key=lambda m: (m.partition(), m.offset())):
        try:
            ev = decode_cart_event(m.value())
        except ContractError:
            continue  # a dead letter
        if m.key() != ev.customer_id.encode():
            continue  # a dead letter too: the key decides the partition, hence the order
        positioned.append((ev, EventPosition(ev.event_id, m.partition(), m.offset())))
    return {c: encode_cart_details(to_cart_details(s))
            for c, s in fold(positioned, catalog_at,
                             lambda ev, _: model.answers[ev.customer_id, ev.event_id]).items()}


class Aggregator:
    """`cartstream aggregate` as a subprocess group that can be killed hard."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen([sys.executable, "-m", "cartstream", "aggregate"],
                                     cwd=ROOT, env=self.env, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


def env_for(bootstrap: str, topics: dict[str, str], run_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, **topics, "KAFKA_BOOTSTRAP": bootstrap, "RUN_DIR": str(run_dir),
            "AGG_SNAPSHOT_INTERVAL_S": "1", "AGG_BACKUP_INTERVAL_S": "0",
            "AGG_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1", **extra}


def random_events(rng: random.Random, customers: list[str], items: list[str],
                  n: int) -> list[CartEvent]:
    out: list[CartEvent] = []
    for _ in range(n):
        if out and rng.random() < 0.02:  # a client retry: the same event again
            out.append(rng.choice(out[-20:]))
            continue
        kind = rng.choices(list(EventType), [60, 20, 12, 8])[0]
        item = rng.choice(items) if kind in (EventType.ITEM_ADDED, EventType.ITEM_REMOVED) else None
        out.append(new_cart_event(kind, rng.choice(customers), item,
                                  rng.randint(1, 4) if kind is EventType.ITEM_ADDED else None))
    return out


def test_kill_9_and_restarts_give_the_carts_of_the_fold(kafka_bootstrap: str, unique: str,
                                                       tmp_path: Path) -> None:
    rng = random.Random(unique)
    topics = make_topics(kafka_bootstrap, unique)
    agg = Aggregator(env_for(kafka_bootstrap, topics, tmp_path, AGG_PRODUCT_WAIT_S="120"),
                     tmp_path / "aggregator.log")
    carts = Carts(kafka_bootstrap, topics["TOPIC_CART_DETAILS"])
    customers = [f"k{unique}-{i}" for i in range(300)]
    # The catalog changes while the flow runs: products 21-25 appear only after events that
    # use them (those adds wait), then 1-5 change name and price, 6 is deleted and 7 runs
    # low on stock.
    first = [Product(str(i), f"P{i}", Decimal(f"{i}.10"), 30) for i in range(1, 21)]
    late = [Product(str(i), f"Late {i}", Decimal(f"{i}.99"), 30) for i in range(21, 26)]
    catalog_a = {p.product_id: p for p in [*first, *late]}
    changed = [Product(str(i), f"P{i} v2", Decimal(f"{i}.75"), 30) for i in range(1, 6)]
    catalog_b = {**catalog_a, **{p.product_id: p for p in changed}, "7": Product(
        "7", "P7", Decimal("7.10"), 2)}
    del catalog_b["6"]
    items = [str(i) for i in range(1, 26)]
    phase_a = random_events(rng, customers, items, 2500)
    phase_b = random_events(rng, customers, items, 2500)
    in_b = {e.event_id for e in phase_b} - {e.event_id for e in phase_a}

    def catalog_at(ev: CartEvent) -> Product | None:
        return (catalog_b if ev.event_id in in_b else catalog_a).get(ev.item_id or "")

    produce(kafka_bootstrap, topics["TOPIC_PRODUCTS"], products_of(first))
    agg.start()
    try:
        # Phase A, with two kill -9 at random moments; the late products arrive in between.
        for i, chunk in enumerate((phase_a[:1200], phase_a[1200:])):
            produce(kafka_bootstrap, topics["TOPIC_CART_EVENTS"], events_of(chunk))
            time.sleep(rng.uniform(0.5, 2.5))
            agg.kill9()
            if i == 0:
                produce(kafka_bootstrap, topics["TOPIC_PRODUCTS"], products_of(late))
            agg.start()
        expected_a = oracle(kafka_bootstrap, topics["TOPIC_CART_EVENTS"], catalog_at,
                            topics["TOPIC_CART_RESERVATIONS"])
        carts.wait_for(expected_a, agg.proc, agg.log)
        assert carts.got(list(expected_a)) == expected_a

        # The catalog changes; probes show when the join has each new version, and a snapshot
        # interval later a resume can no longer see the old one.
        produce(kafka_bootstrap, topics["TOPIC_PRODUCTS"],
                [*products_of([*changed, catalog_b["7"]]), (b"6", None)])
        for pid in ("1", "2", "3", "4", "5", "6", "7"):
            probe_until_current(carts, agg, kafka_bootstrap, topics, pid, catalog_b.get(pid))
        time.sleep(2.5)

        # Phase B, with two more kill -9.
        for chunk in (phase_b[:1200], phase_b[1200:]):
            produce(kafka_bootstrap, topics["TOPIC_CART_EVENTS"], events_of(chunk))
            time.sleep(rng.uniform(0.5, 2.5))
            agg.kill9()
            agg.start()
        expected = oracle(kafka_bootstrap, topics["TOPIC_CART_EVENTS"], catalog_at,
                            topics["TOPIC_CART_RESERVATIONS"])
        workload = {c: v for c, v in expected.items() if c in set(customers)}
        carts.wait_for(workload, agg.proc, agg.log)
    finally:
        status = agg.stop()
    assert status == 0, agg.log.read_text()[-3000:]  # SIGTERM stops it cleanly
    assert carts.got(list(workload)) == workload
    # Output repeats after a resume, but never skips or invents a version.
    for c, raw in workload.items():
        assert carts.versions[c] == set(range(1, decode_cart_details(raw).customer_version + 1))
    carts.close()


def probe_until_current(carts: Carts, agg: Aggregator, bootstrap: str, topics: dict[str, str],
                        pid: str, product: Product | None, timeout: float = 30) -> None:
    """Add product `pid` to fresh customers until the result is what `product` gives."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        ev = new_cart_event(EventType.ITEM_ADDED, f"probe-{uuid.uuid4().hex[:8]}-{pid}", pid, 3)
        produce(bootstrap, topics["TOPIC_CART_EVENTS"], events_of([ev]))
        while ev.customer_id not in carts.latest:
            assert agg.proc is not None and agg.proc.poll() is None, agg.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no record for probe {ev.customer_id}"
            carts.poll()
        got = decode_cart_details(carts.latest[ev.customer_id][1])
        want = to_cart_details(apply(None, ev, product, got.last_event))
        if (got.line_items, got.rejected) == (want.line_items, want.rejected):
            return
        assert time.monotonic() < deadline, f"product {pid} never became current ({n} probes)"
        time.sleep(0.2)


def test_two_processes_dead_letters_metrics_and_a_clean_stop(kafka_bootstrap: str, unique: str,
                                                             tmp_path: Path) -> None:
    rng = random.Random(unique)
    topics = make_topics(kafka_bootstrap, unique, partitions=4)
    catalog = {str(i): Product(str(i), f"P{i}", Decimal(f"{i}.50"), 20) for i in range(1, 11)}
    customers = [f"m{unique}-{i}" for i in range(100)]
    events = random_events(rng, customers, [str(i) for i in range(1, 12)], 1500)
    good = events[0]
    bad = [(b"x", b"{oops"), (b"zz", encode_cart_event(good)),
           (good.customer_id.encode(), b'{"type":"TELEPORT"}'),
           (good.customer_id.encode(), encode_cart_event(good).replace(b'"occurredAt":"',
                                                                     b'"occurredAt":"x'))]
    produce(kafka_bootstrap, topics["TOPIC_PRODUCTS"],
            [*products_of(list(catalog.values())), (b"11", b'{"productId":"11","price":"1"}')])
    produce(kafka_bootstrap, topics["TOPIC_CART_EVENTS"], [*events_of(events[:700]), *bad,
                                                          *events_of(events[700:])])
    port = free_port_block(2)
    agg = Aggregator(env_for(kafka_bootstrap, topics, tmp_path, AGG_PROCESSES="2",
                             AGG_METRICS_PORT=str(port), AGG_CLUSTER_PORT=str(free_port_block(2)),
                             AGG_LAG_INTERVAL_S="0.5", AGG_PRODUCT_WAIT_S="5"),
                     tmp_path / "aggregator.log")
    carts = Carts(kafka_bootstrap, topics["TOPIC_CART_DETAILS"])
    agg.start()
    try:
        expected = oracle(kafka_bootstrap, topics["TOPIC_CART_EVENTS"],
                          lambda ev: catalog.get(ev.item_id or ""),
                          topics["TOPIC_CART_RESERVATIONS"])
        carts.wait_for(expected, agg.proc, agg.log)
        assert carts.got(list(expected)) == expected
        assert len(carts.records) == len(events)

        dead = Topic(kafka_bootstrap, topics["TOPIC_DEAD_LETTER"])
        dead.read_to_end()
        letters = sorted((decode_dead_letter(m.value()) for m in dead.records),
                         key=lambda d: (d.source_topic, d.reason))
        dead.close()
        assert [(d.source_topic, d.reason) for d in letters] == [
            (topics["TOPIC_CART_EVENTS"], "INVALID_JSON"),
            (topics["TOPIC_CART_EVENTS"], "KEY_MISMATCH"),
            (topics["TOPIC_CART_EVENTS"], "UNKNOWN_EVENT_TYPE"),
            (topics["TOPIC_CART_EVENTS"], "WRONG_TYPE"),
            (topics["TOPIC_PRODUCTS"], "MISSING_FIELD"),
        ]
        assert {(d.key, d.value) for d in letters[:4]} == set(bad)

        # Each process serves its metrics; together they read every event once.
        def scrape() -> list[str]:
            return [requests.get(f"http://127.0.0.1:{port + i}/metrics", timeout=5).text
                    for i in (0, 1)]

        def lags(pages: list[str]) -> list[str]:
            return [line for p in pages for line in p.splitlines()
                    if line.startswith("cartstream_aggregator_consumer_lag{")
                    and topics["TOPIC_CART_EVENTS"] in line]

        def no_lag(pages: list[str]) -> bool:
            return len(lags(pages)) == 4 and all(line.endswith(" 0.0") for line in lags(pages))

        # The lag is measured every AGG_LAG_INTERVAL_S: wait for a measurement after the end.
        wait_until(lambda: no_lag(scrape()), 30, "every partition's lag to be measured as 0")
        pages = scrape()
        assert sum(metric(p, "cartstream_aggregator_events_read_total") for p in pages) == 1500
        assert sum(metric(p, "cartstream_aggregator_cart_details_total") for p in pages) == 1500
        assert no_lag(pages), lags(pages)

        # Caught up: each process reads partitions and measured its lag, so it is ready.
        def ready(i: int) -> requests.Response:
            return requests.get(f"http://127.0.0.1:{port + i}/readyz", timeout=5)

        def both_ready() -> bool:
            answers = [ready(i) for i in (0, 1)]
            return all(r.status_code == 200 and r.json()["partitions"] > 0
                       and r.json()["lag"] == 0 for r in answers)

        wait_until(both_ready, 30, "both processes to be ready")
        for i in (0, 1):
            answer = ready(i)
            assert answer.status_code == 200, answer.text
            assert answer.json()["partitions"] > 0 and answer.json()["lag"] == 0
    finally:
        status = agg.stop()
    assert status == 0, agg.log.read_text()[-3000:]
    carts.close()


def metric(page: str, name: str) -> float:
    """The sum of a metric's samples (all label sets) in a Prometheus text page."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def test_the_sink_fails_loudly_instead_of_dropping(kafka_bootstrap: str, unique: str) -> None:
    # The broker refuses a record: this topic takes at most 1000-byte messages.
    topic = f"agg-{unique}-tiny"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "1000"})]
                        )[topic].result(timeout=30)
    part = DeliveredKafkaSink(kafka_bootstrap, topic, delivery_timeout_s=10).build("out", 0, 1)
    part.write_batch([(b"k", b"small")])
    with pytest.raises(DeliveryFailed, match="refused"):
        part.write_batch([(b"k", os.urandom(5000))])  # incompressible
    # Nobody answers: the batch times out rather than pass.
    dead_end = DeliveredKafkaSink(f"127.0.0.1:{free_port()}", topic,
                                  delivery_timeout_s=2).build("out", 0, 1)
    with pytest.raises(DeliveryFailed):
        dead_end.write_batch([(b"k", b"v")])
