"""The write API against the real shared Kafka (and Redis): acknowledged means on the log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import orjson
import pytest
import redis
import requests
from flask.testing import FlaskClient
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from cart_contract import EventType, decode_cart_event, encode_cart_event, new_cart_event
from cart_contract.layout import catalog_ready_key, product_key
from cart_write.app import create_app
from cart_write.catalog import NoCatalog, RedisCatalog
from cart_write.config import Config
from cart_write.publisher import ConfluentPublisher, PublishUnavailable
from infra.topics import topic_specs
from tests.integration.kafka_private import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOPIC = topic_specs()[0].name
PARTITIONS = topic_specs()[0].partitions


def read_at(bootstrap: str, topic: str, partition: int, offset: int) -> Any:
    """The record stored at (topic, partition, offset); waits a bounded time for it."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=1000).get(tp, []):
                if record.offset == offset:
                    return record
        raise AssertionError(f"nothing at {topic}/{partition}@{offset}")
    finally:
        consumer.close()


@pytest.fixture
def config(kafka_bootstrap: str, redis_url: str) -> Config:
    # The test's Redis, not the default URL: idempotency records live there.
    return Config(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_cart_events=TOPIC)


@pytest.fixture
def client(config: Config) -> Any:
    publisher = ConfluentPublisher(config)
    yield create_app(config, publisher=publisher, catalog=NoCatalog()).test_client()
    publisher.close()


def post(client: FlaskClient, path: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post(path, data=orjson.dumps(body),
                       headers={"Content-Type": "application/json", **headers})


def test_each_acknowledged_command_is_on_cart_events_where_the_api_says(
    client: FlaskClient, kafka_bootstrap: str, unique: str
) -> None:
    customer = f"it-write-{unique}"
    sent = [
        ("/api/v1/add", {"customerId": customer, "itemId": "1", "qty": 2},
         (EventType.ITEM_ADDED, "1", 2)),
        ("/api/v1/remove", {"customerId": customer, "itemId": "1", "qty": 1},
         (EventType.ITEM_REMOVED, "1", 1)),
        ("/api/v1/remove", {"customerId": customer, "itemId": "2"},
         (EventType.ITEM_REMOVED, "2", None)),
        ("/api/v1/checkout", {"customerId": customer}, (EventType.CHECKOUT, None, None)),
        ("/api/v1/clear", {"customerId": customer}, (EventType.CART_CLEARED, None, None)),
    ]
    acks = []
    for path, body, expected in sent:
        resp = post(client, path, body)
        assert resp.status_code == 202, resp.get_data(as_text=True)
        acks.append((resp.get_json(), expected))

    # One key, one partition: Kafka's own murmur2 choice, as Java clients would make it.
    expected_partition = (murmur2(customer.encode()) & 0x7FFFFFFF) % PARTITIONS
    offsets = []
    for ack, (etype, item_id, qty) in acks:
        assert ack["partition"] == expected_partition
        record = read_at(kafka_bootstrap, TOPIC, ack["partition"], ack["offset"])
        assert record.key == customer.encode()
        event = decode_cart_event(record.value)
        assert event.event_id == ack["eventId"]
        assert (event.type, event.customer_id, event.item_id, event.qty) == (
            etype, customer, item_id, qty)
        offsets.append(ack["offset"])
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_a_retry_with_the_same_idempotency_key_answers_the_first_ack(
    client: FlaskClient, kafka_bootstrap: str, unique: str
) -> None:
    body = {"customerId": f"it-idem-{unique}", "itemId": "1", "qty": 1}
    first = post(client, "/api/v1/add", body, **{"Idempotency-Key": unique}).get_json()
    again = post(client, "/api/v1/add", body, **{"Idempotency-Key": unique}).get_json()
    assert again == first  # the record in Redis answers; nothing is published again
    record = read_at(kafka_bootstrap, TOPIC, first["partition"], first["offset"])
    assert decode_cart_event(record.value).event_id == first["eventId"]


def test_an_unreachable_broker_is_503_and_not_ready(unique: str) -> None:
    config = Config(kafka_bootstrap=f"localhost:{free_port()}", request_timeout_ms=1000,
                    delivery_timeout_ms=2000, max_block_ms=1000)
    publisher = ConfluentPublisher(config)
    with pytest.raises(PublishUnavailable):
        publisher.publish(TOPIC, b"k", b"v")
    client = create_app(config, publisher=publisher, catalog=NoCatalog()).test_client()
    resp = post(client, "/api/v1/clear", {"customerId": f"it-down-{unique}"})
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "KAFKA_UNAVAILABLE"
    assert int(resp.headers["Retry-After"]) >= 1
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_many_concurrent_publishes_each_get_their_own_record(
    config: Config, kafka_bootstrap: str, unique: str
) -> None:
    """Requests waiting at once on one producer: each ack names the record that request sent."""
    publisher = ConfluentPublisher(config)
    sent = {i: new_cart_event(EventType.CART_CLEARED, f"it-conc-{unique}-{i}")
            for i in range(64)}
    acks: dict[int, Any] = {}
    errors: list[BaseException] = []

    def request(i: int) -> None:
        try:
            acks[i] = publisher.publish(TOPIC, sent[i].customer_id.encode(),
                                        encode_cart_event(sent[i]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(len(sent))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=config.ack_timeout_s + 5)
        assert not errors and not any(t.is_alive() for t in threads)
    finally:
        publisher.close()
    positions = {(a.partition, a.offset) for a in acks.values()}
    assert len(positions) == len(sent)  # no two requests were handed the same record
    stored = read_many(kafka_bootstrap, TOPIC, positions)
    for i, ack in acks.items():
        event = decode_cart_event(stored[(ack.partition, ack.offset)])
        assert event.event_id == sent[i].event_id


def read_many(bootstrap: str, topic: str, positions: set[tuple[int, int]]) -> dict[Any, bytes]:
    """The values stored at each (partition, offset); waits a bounded time for them."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        starts: dict[int, int] = {}
        for partition, offset in positions:
            starts[partition] = min(offset, starts.get(partition, offset))
        tps = {p: TopicPartition(topic, p) for p in starts}
        consumer.assign(list(tps.values()))
        for p, offset in starts.items():
            consumer.seek(tps[p], offset)
        found: dict[Any, bytes] = {}
        deadline = time.monotonic() + 30
        while len(found) < len(positions) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for record in records:
                    if (tp.partition, record.offset) in positions:
                        found[(tp.partition, record.offset)] = record.value
        assert len(found) == len(positions), f"missing {positions - set(found)}"
        return found
    finally:
        consumer.close()


def test_concurrent_requests_during_an_outage_fail_with_503_within_bounds(unique: str) -> None:
    config = Config(kafka_bootstrap=f"localhost:{free_port()}", request_timeout_ms=1000,
                    delivery_timeout_ms=2000, max_block_ms=1000)
    publisher = ConfluentPublisher(config)
    client = create_app(config, publisher=publisher, catalog=NoCatalog()).test_client()
    answers: list[tuple[int, str]] = []

    def request(i: int) -> None:
        resp = post(client, "/api/v1/clear", {"customerId": f"it-down-{unique}-{i}"})
        answers.append((resp.status_code, resp.get_json()["error"]["code"]))

    started = time.monotonic()
    threads = [threading.Thread(target=request, args=(i,)) for i in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=config.ack_timeout_s + 5)
        # Every request answered (no hang), each with 503, within one ack wait.
        assert not any(t.is_alive() for t in threads)
        assert answers == [(503, "KAFKA_UNAVAILABLE")] * 16
        assert time.monotonic() - started < config.ack_timeout_s + 5
    finally:
        publisher.close()


# ---------------------------------------------------------------- the catalog view in Redis


@pytest.fixture
def catalog_db(redis_url: str, unique: str) -> Any:
    """A Redis database other than the shared one, holding a ready catalog with one product."""
    parts = urlparse(redis_url)
    url = urlunparse(parts._replace(path="/14"))
    r = redis.Redis.from_url(url)
    created_ready = bool(r.set(catalog_ready_key(), "1", nx=True))
    product = f"it-prod-{unique}"
    r.hset(product_key(product), mapping={"offset": "0", "doc": "{}"})
    yield url, product
    r.delete(product_key(product))
    if created_ready:
        r.delete(catalog_ready_key())
    r.close()


def test_with_a_ready_catalog_unknown_products_are_404_and_known_ones_accepted(
    config: Config, catalog_db: tuple[str, str], unique: str
) -> None:
    url, product = catalog_db
    publisher = ConfluentPublisher(config)
    client = create_app(config, publisher=publisher,
                        catalog=RedisCatalog(url, timeout_s=1.0)).test_client()
    customer = f"it-cat-{unique}"
    resp = post(client, "/api/v1/add", {"customerId": customer, "itemId": f"no-{unique}",
                                        "qty": 1})
    assert resp.status_code == 404
    assert resp.get_json()["error"] == {
        "code": "UNKNOWN_PRODUCT", "message": resp.get_json()["error"]["message"],
        "field": "itemId"}
    resp = post(client, "/api/v1/add", {"customerId": customer, "itemId": product, "qty": 1})
    assert resp.status_code == 202
    publisher.close()


def test_with_redis_down_the_catalog_check_is_skipped(config: Config, unique: str) -> None:
    publisher = ConfluentPublisher(config)
    down = RedisCatalog(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    client = create_app(config, publisher=publisher, catalog=down).test_client()
    for _ in range(2):
        resp = post(client, "/api/v1/add", {"customerId": f"it-nored-{unique}",
                                            "itemId": f"whatever-{unique}", "qty": 1})
        assert resp.status_code == 202
    publisher.close()


# ---------------------------------------------------------------- the production server


def test_cartstream_serve_write_serves_the_seed_commands_under_granian(
    kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, "WRITE_PORT": str(port), "WRITE_HOST": "127.0.0.1",
           "KAFKA_BOOTSTRAP": kafka_bootstrap, "REDIS_URL": redis_url,
           "TOPIC_CART_EVENTS": TOPIC, "WRITE_CATALOG_CHECK": "0", "WRITE_WORKERS": "2"}
    log = (tmp_path / "write.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "cartstream", "serve", "write"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, (tmp_path / "write.log").read_text()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
        customer = f"it-granian-{unique}"
        # Exactly what the seed's curl sends; a bare `curl -d` (form-urlencoded) is 415.
        resp = requests.post(f"{base}/api/v1/add", timeout=10,
                             data=f'{{"customerId":"{customer}","itemId":"1","qty":1}}',
                             headers={"Content-Type": "application/json"})
        assert resp.status_code == 202, resp.text
        form = requests.post(f"{base}/api/v1/checkout", timeout=10,
                             data=f'{{"customerId":"{customer}"}}',
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415, form.text
        bare = requests.post(f"{base}/api/v1/checkout", timeout=10,
                             data=f'{{"customerId":"{customer}"}}',
                             headers={"Content-Type": "application/json"})
        assert bare.status_code == 202, bare.text
        for ack, etype in ((resp.json(), EventType.ITEM_ADDED),
                           (bare.json(), EventType.CHECKOUT)):
            event = decode_cart_event(
                read_at(kafka_bootstrap, TOPIC, ack["partition"], ack["offset"]).value)
            assert (event.event_id, event.type, event.customer_id) == (
                ack["eventId"], etype, customer)
        # Over 64 KiB is 413 whether the length is declared or the body comes chunked.
        big = b'{"customerId":"x","pad":"' + b"a" * 70_000 + b'"}'
        for data in (big, iter([big[:30_000], big[30_000:]])):
            too_big = requests.post(f"{base}/api/v1/clear", data=data, timeout=10,
                                    headers={"Content-Type": "application/json"})
            assert too_big.status_code == 413
            assert too_big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        nf = requests.get(f"{base}/nope", timeout=5)
        assert nf.status_code == 404 and nf.json()["error"]["code"] == "NOT_FOUND"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise
        finally:
            log.close()
    assert rc == 0, (tmp_path / "write.log").read_text()


def test_the_locator_finds_an_acknowledged_record_by_its_bytes(
        kafka_bootstrap: str, scratch_topic: str, unique: str) -> None:
    """What a 202 answers when librdkafka acknowledged a retry without its offset."""
    from confluent_kafka import Producer

    from cart_write.publisher import kafka_locator

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
    for i in range(5):
        producer.produce(scratch_topic, f"{unique}-{i}".encode(), b"k")
    assert producer.flush(30) == 0
    locate = kafka_locator(Config(kafka_bootstrap=kafka_bootstrap))
    assert locate(scratch_topic, 0, b"k", f"{unique}-3".encode(), 20) == 3
    assert locate(scratch_topic, 0, b"k", f"{unique}-absent".encode(), 20) is None
