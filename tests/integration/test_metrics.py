"""Readiness and metrics against the real servers: the write API's broker check, a sink's
counts and lag, `cartstream lag`."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cart_contract import encode_cart_details
from cart_write.app import create_app
from cart_write.catalog import NoCatalog
from cart_write.config import Config as WriteConfig
from cart_write.publisher import ConfluentPublisher
from connectors.config import Config
from connectors.consumer import Stopper
from connectors.migrate import migrate
from connectors.service import main as run_sink
from tests.support.cli import cartstream
from tests.support.connectors import (
    cart,
    free_port,
    fresh_database,
    private_config,
    produce,
    wait_until,
)
from tests.support.idempotency import MemoryIdempotencyStore

pytestmark = pytest.mark.integration


def samples(text: str, name: str) -> list[Any]:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def value(text: str, name: str, **labels: str) -> float:
    return sum(s.value for s in samples(text, name)
               if all(s.labels.get(k) == v for k, v in labels.items()))


# ---------------------------------------------------------------- the write API


def write_client(bootstrap: str) -> Any:
    config = WriteConfig(kafka_bootstrap=bootstrap, request_timeout_ms=500,
                         delivery_timeout_ms=1000, max_block_ms=500, catalog_check=False)
    return create_app(config, publisher=ConfluentPublisher(config), catalog=NoCatalog(),
                      idempotency=MemoryIdempotencyStore()).test_client()


def test_write_readyz_is_503_while_the_broker_is_unreachable_and_counts_the_503s() -> None:
    client = write_client(f"127.0.0.1:{free_port()}")  # nothing listens there
    resp = client.get("/readyz")  # no command sent before: the metadata probe answers
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "KAFKA_UNAVAILABLE"
    before = client.get("/metrics").get_data(as_text=True)
    resp = client.post("/api/v1/clear", data=orjson.dumps({"customerId": "m-down"}),
                       content_type="application/json")
    assert resp.status_code == 503
    after = client.get("/metrics").get_data(as_text=True)
    name = "cartstream_write_produce_errors_total"
    assert value(after, name) - value(before, name) == 1
    req = "cartstream_write_http_requests_total"
    assert (value(after, req, route="/api/v1/clear", status="503")
            - value(before, req, route="/api/v1/clear", status="503")) == 1
    client.application.extensions["cart_write"]["publisher"].close()


def test_write_readyz_is_200_when_the_broker_answers(kafka_bootstrap: str) -> None:
    client = write_client(kafka_bootstrap)
    resp = client.get("/readyz")  # no command sent before: the metadata probe answers
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["status"] == "ready"
    client.application.extensions["cart_write"]["publisher"].close()


# ---------------------------------------------------------------- a sink


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def cfg(kafka_bootstrap: str, redis_url: str, database_url: str, unique: str) -> Config:
    db = fresh_database(database_url, f"test_{unique}")
    with psycopg.connect(db, autocommit=True) as conn:
        migrate(conn)
    return private_config(kafka_bootstrap, redis_url, db, unique, partitions=2).replace(
        redis_metrics_port=free_port(), lag_interval_s=0.2)


def test_a_sink_counts_records_and_dead_letters_by_reason_and_becomes_ready(
        cfg: Config, unique: str) -> None:
    base = f"http://127.0.0.1:{cfg.redis_metrics_port}"
    stopper = Stopper()
    thread = threading.Thread(target=run_sink, args=("redis", cfg, stopper), daemon=True)
    thread.start()
    try:
        wait_until(lambda: get(f"{base}/healthz")[0] == 200, 30, "the metrics port")
        before = get(f"{base}/metrics")[1]
        good = [(f"m{unique}-{i}".encode(), encode_cart_details(cart(f"m{unique}-{i}", 1)))
                for i in range(20)]
        poison = [(b"p1", b"not json"), (b"p2", b"{}"), (b"p3", b"{}"), (b"p4", None)]
        produce(cfg.kafka_bootstrap, cfg.topic_cart_details, good + poison)

        def counted() -> float:
            text = get(f"{base}/metrics")[1]
            return (value(text, "cartstream_sink_records_total", sink="redis")
                    - value(before, "cartstream_sink_records_total", sink="redis"))

        wait_until(lambda: counted() == 24, 60, "the sink to count 24 records")
        text = get(f"{base}/metrics")[1]
        dead = Counter({s.labels["reason"]: s.value for s in
                        samples(text, "cartstream_sink_dead_letters_total")
                        if s.labels["sink"] == "redis"})
        dead.subtract({s.labels["reason"]: s.value for s in
                       samples(before, "cartstream_sink_dead_letters_total")
                       if s.labels["sink"] == "redis"})
        assert +dead == Counter({"MISSING_FIELD": 2, "INVALID_JSON": 1, "TOMBSTONE": 1})
        assert value(text, "cartstream_sink_batch_duration_seconds_count", sink="redis") >= 1

        def ready() -> bool:
            status, body = get(f"{base}/readyz")
            return status == 200 and orjson.loads(body)["lag"] == 0

        wait_until(ready, 30, "the sink to be ready with no lag")
        lags = {s.labels["partition"]: s.value for s in
                samples(get(f"{base}/metrics")[1], "cartstream_sink_consumer_lag")
                if s.labels["sink"] == "redis"}
        assert lags == {"0": 0, "1": 0}
    finally:
        stopper.stop()
        thread.join(30)


def test_a_sink_with_lag_above_the_threshold_is_not_ready(cfg: Config, unique: str,
                                                          monkeypatch: Any) -> None:
    cfg = cfg.replace(ready_max_lag=5, batch_max=1)
    records = [(f"n{unique}".encode(), encode_cart_details(cart(f"n{unique}", v)))
               for v in range(1, 41)]
    produce(cfg.kafka_bootstrap, cfg.topic_cart_details, records)
    base = f"http://127.0.0.1:{cfg.redis_metrics_port}"
    # A store that takes its time: the 40 records are read much faster than stored.
    from connectors import service

    slow = service.build_sink("redis", cfg)
    write = slow.write

    def slow_write(prepared: Any) -> Any:
        threading.Event().wait(0.3)
        return write(prepared)

    monkeypatch.setattr(slow, "write", slow_write)
    monkeypatch.setattr(service, "build_sink", lambda name, c: slow)
    stopper = Stopper()
    thread = threading.Thread(target=run_sink, args=("redis", cfg, stopper), daemon=True)
    try:
        thread.start()

        def lagging() -> bool:
            status, body = get(f"{base}/readyz")
            doc = orjson.loads(body)
            return status == 503 and (doc.get("lag") or 0) > 5

        wait_until(lagging, 30, "a not-ready answer with the lag above 5")
    finally:
        stopper.stop()
        thread.join(30)


# ---------------------------------------------------------------- cartstream lag


def test_cartstream_lag_shows_each_groups_lag(cfg: Config, unique: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    produce(cfg.kafka_bootstrap, cfg.topic_cart_details,
            [(b"k", encode_cart_details(cart(f"l{unique}", v))) for v in range(1, 11)],
            partition=0)
    group = cfg.group("redis")
    committer = Consumer({"bootstrap.servers": cfg.kafka_bootstrap, "group.id": group,
                          "enable.auto.commit": False})
    committer.commit(offsets=[TopicPartition(cfg.topic_cart_details, 0, 4)],
                     asynchronous=False)
    committer.close()
    result = cartstream("lag", "--aggregator", f"http://127.0.0.1:{free_port()}/metrics",
                        config=cfg)
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert [group, cfg.topic_cart_details, "2", "0", "EMPTY", "6"] in rows
    assert "aggregator: no metrics at" in result.output
