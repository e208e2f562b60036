"""HTTP in, HTTP out, through real Kafka, the dataflow, the sinks and the read API."""

from __future__ import annotations

import os
import random
import subprocess
import time
import uuid
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis
import requests
from confluent_kafka import Consumer, TopicPartition

from cart_contract import (
    CartEvent,
    EventPosition,
    Product,
    cart_details_to_dict,
    decode_cart_event,
)
from cart_contract.layout import PRODUCT_DOC_FIELD, product_key
from tests.support.fold_model import fold, to_cart_details
from tests.support.reservations import model_of_topic

pytestmark = pytest.mark.e2e
KAFKA_BIN = Path(__file__).resolve().parents[2] / "infra" / "kafka" / "bin"
SEED_PRODUCTS = [
    '1:{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}',
    '2:{"productId":"2","productName":"Samsung Galaxy S21","price":"55000","stockQty":500}',
]


def console_produce(system, topic: str, lines: list[str]) -> None:
    """The seed's console-producer command, fed the given key:json lines.

    On a SASL broker the wrapper supplies the system's catalog principal (KAFKA_CLIENT_CONFIG),
    as it supplies the stack's from `$RUN_DIR/kafka` after `make up PROFILE=secure`.
    """
    env = None
    if system.principals is not None:
        env = {**os.environ, "KAFKA_CLIENT_CONFIG": str(system.principals.tool_config("catalog"))}
    subprocess.run(
        [str(KAFKA_BIN / "kafka-console-producer"), "--topic", topic, "--bootstrap-server",
         system.env["KAFKA_BOOTSTRAP"], "--property", "parse.key=true",
         "--property", "key.separator=:"],
        input="\n".join(lines) + "\n", text=True, check=True, timeout=120, capture_output=True,
        env=env,
    )


def wait_for_products(system, ids: list[str]) -> None:
    """Wait until the catalog sink has landed these products in both stores: the read API
    lists them from PostgreSQL, and the write API checks commands against Redis (written
    after PostgreSQL, so the first alone would let an add meet UNKNOWN_PRODUCT)."""
    deadline = time.monotonic() + 60
    store = redis.Redis.from_url(system.env["REDIS_URL"])
    prefix = system.env["REDIS_KEY_PREFIX"]
    for pid in ids:
        url = f"{system.read_url}/api/v1/products/{pid}"
        while (requests.get(url, timeout=5).status_code != 200
               or not store.hexists(product_key(pid, prefix), PRODUCT_DOC_FIELD)):
            assert time.monotonic() < deadline, f"product {pid} never landed"
            time.sleep(0.2)
    store.close()


def post(session: requests.Session, system, command: str, body: dict, **kw) -> dict:
    """POST a command, insisting on 202."""
    resp = session.post(f"{system.write_url}/api/v1/{command}", json=body, timeout=30, **kw)
    assert resp.status_code == 202, resp.text
    return resp.json()


def read_after(session: requests.Session, system, customer: str, ack: dict) -> dict:
    """GET the cart once it reflects the acknowledged write (read your own write)."""
    resp = session.get(
        f"{system.read_url}/api/v1/{customer}",
        params={"minOffset": ack["readToken"], "timeout": 30000}, timeout=40,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_seed_flow(system) -> None:
    console_produce(system, system.env["TOPIC_PRODUCTS"], SEED_PRODUCTS)
    wait_for_products(system, ["1", "2"])
    customer = f"123-{uuid.uuid4().hex[:6]}"
    s = requests.Session()
    for _ in range(3):
        post(s, system, "add", {"customerId": customer, "itemId": "1", "qty": 1})
    post(s, system, "add", {"customerId": customer, "itemId": 2, "qty": 1})
    ack = post(s, system, "remove", {"customerId": customer, "itemId": "2", "qty": 1})
    cart = read_after(s, system, customer, ack)
    assert [(li["itemId"], li["itemName"], li["qty"]) for li in cart["lineItems"]] == [
        ("1", "IPhone 12", 3)
    ]
    assert (cart["totalQty"], cart["totalPrice"], cart["status"]) == (3, "195000.00", "OPEN")

    ack = post(s, system, "checkout", {"customerId": customer})
    cart = read_after(s, system, customer, ack)
    assert (cart["status"], cart["totalPrice"]) == ("CHECKED_OUT", "195000.00")
    first_cart = cart["cartId"]

    ack = post(s, system, "add", {"customerId": customer, "itemId": "2", "qty": 1})
    cart = read_after(s, system, customer, ack)
    assert cart["status"] == "OPEN" and cart["cartId"] != first_cart
    assert [(li["itemId"], li["qty"]) for li in cart["lineItems"]] == [("2", 1)]
    assert cart["version"] == cart["customer"]["version"] == 7

    orders = s.get(f"{system.read_url}/api/v1/{customer}/orders", timeout=10).json()
    assert [o["cartId"] for o in orders["items"]] == [first_cart]


def read_log(system, topic: str) -> list[tuple[CartEvent, EventPosition]]:
    """Every cart event in the topic, in per-partition offset order."""
    consumer = Consumer(system.kafka(**{"group.id": f"oracle-{uuid.uuid4().hex}",
                                        "enable.auto.commit": False}))
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    out: list[tuple[CartEvent, EventPosition]] = []
    for p in meta.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high <= low:
            continue
        consumer.assign([TopicPartition(topic, p, low)])
        got = 0
        while got < high - low:
            for msg in consumer.consume(1000, timeout=5):
                if msg.error():
                    continue
                ev = decode_cart_event(msg.value())
                out.append((ev, EventPosition(ev.event_id, msg.partition(), msg.offset())))
                got += 1
    consumer.close()
    return out


def normalise(doc: dict) -> dict:
    """The parts of a cart document that must equal the oracle's."""
    keep = ("customerId", "cartId", "status", "totalQty", "totalPrice", "version", "lastEvent",
            "rejected")
    out = {k: doc[k] for k in keep}
    out["lineItems"] = [(li["itemId"], li["qty"], li["unitPrice"], li["totalPrice"])
                        for li in doc["lineItems"]]
    customer = doc.get("customer")
    out["customer"] = None if customer is None else {
        k: customer[k] for k in ("version", "lastEvent", "rejected")}
    return out


def test_random_workload_matches_the_fold_of_the_log(system) -> None:
    rng = random.Random(7)
    catalog = {str(i): Product(str(i), f"Product {i}", Decimal(f"{i * 3}.{i % 100:02d}"), 40)
               for i in range(1, 21)}
    console_produce(system, system.env["TOPIC_PRODUCTS"], [
        f'{p.product_id}:{{"productId":"{p.product_id}","productName":"{p.product_name}",'
        f'"price":"{p.price}","stockQty":{p.stock_qty}}}' for p in catalog.values()
    ])
    wait_for_products(system, list(catalog))
    customers = [f"w-{uuid.uuid4().hex[:8]}" for _ in range(100)]
    last_ack: dict[str, dict] = {}
    s = requests.Session()
    for _ in range(2000):
        c = rng.choice(customers)
        kind = rng.choices(["add", "remove", "checkout", "clear"], [60, 20, 12, 8])[0]
        body: dict = {"customerId": c}
        if kind in ("add", "remove"):
            body["itemId"] = str(rng.randint(1, 22))  # 21 and 22 are unknown products
            if kind == "add" or rng.random() < 0.5:
                body["qty"] = rng.randint(1, 5)
        resp = s.post(f"{system.write_url}/api/v1/{kind}", json=body, timeout=30)
        if resp.status_code == 404:  # unknown product refused at once by the catalog check
            assert resp.json()["error"]["code"] == "UNKNOWN_PRODUCT"
            continue
        assert resp.status_code == 202, resp.text
        last_ack[c] = resp.json()

    got = {c: read_after(s, system, c, ack) for c, ack in last_ack.items()}
    log = read_log(system, system.env["TOPIC_CART_EVENTS"])
    # Checkouts compete for stock: each one's answer is the reservation model's decision over
    # the request topic as the aggregator wrote it.
    reservations = model_of_topic(system.kafka(),
                                  system.env["TOPIC_CART_RESERVATIONS"])
    # The module's other tests share these topics; compare this workload's customers only.
    states = fold(log, lambda ev: catalog.get(ev.item_id or ""),
                  lambda ev, _: reservations.answers[ev.customer_id, ev.event_id])
    assert set(last_ack) <= set(states)
    expected = {c: cart_details_to_dict(to_cart_details(states[c])) for c in last_ack}

    for c in last_ack:
        assert normalise(got[c]) == normalise(expected[c]), c

    by_customer: dict = defaultdict(dict)
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        deadline = time.monotonic() + 60
        while True:
            rows = conn.execute(
                "SELECT customer_id, doc FROM customers WHERE customer_id = ANY(%s)",
                (list(expected),)).fetchall()
            for cid, doc in rows:
                by_customer[cid] = doc
            done = all(by_customer[c].get("customer", {}).get("version")
                       == expected[c]["customer"]["version"] for c in expected)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        carts = dict(conn.execute("SELECT cart_id, doc FROM carts WHERE customer_id = ANY(%s)",
                                  (list(expected),)).fetchall())
    for c in expected:
        assert normalise(by_customer[c]) == normalise(expected[c]), c
        # The cart's row is the record without its customer part; no row for generation 0.
        row = carts.get(expected[c]["cartId"])
        if expected[c]["cartId"].endswith(":0"):
            assert row is None, c
        else:
            assert row is not None and normalise(row) == normalise(
                {k: v for k, v in expected[c].items() if k != "customer"}), c


def _end_offset(system, partition: int) -> int:
    consumer = Consumer(system.kafka(**{"group.id": f"e2e-probe-{uuid.uuid4().hex[:6]}"}))
    try:
        return consumer.get_watermark_offsets(
            TopicPartition(system.env["TOPIC_CART_EVENTS"], partition), timeout=10)[1]
    finally:
        consumer.close()


def test_retried_request_with_one_idempotency_key_has_no_double_effect(system) -> None:
    console_produce(system, system.env["TOPIC_PRODUCTS"], SEED_PRODUCTS)
    wait_for_products(system, ["1"])
    customer = f"idem-{uuid.uuid4().hex[:6]}"
    key = {"Idempotency-Key": f"order-{uuid.uuid4().hex[:8]}"}
    s = requests.Session()
    body = {"customerId": customer, "itemId": "1", "qty": 2}
    first = s.post(f"{system.write_url}/api/v1/add", json=body, headers=key, timeout=30)
    assert first.status_code == 202, first.text
    end = _end_offset(system, first.json()["partition"])
    retry = s.post(f"{system.write_url}/api/v1/add", json=body, headers=key, timeout=30)
    assert retry.status_code == 202 and retry.content == first.content
    assert retry.headers["Idempotent-Replayed"] == "true"
    other = s.post(f"{system.write_url}/api/v1/add", json={**body, "qty": 3}, headers=key,
                   timeout=30)
    assert other.status_code == 422, other.text
    assert other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    # Nothing new in cart-events for the retry nor for the misuse.
    assert _end_offset(system, first.json()["partition"]) == end
    cart = read_after(s, system, customer, first.json())
    assert [(li["itemId"], li["qty"]) for li in cart["lineItems"]] == [("1", 2)]
    assert cart["version"] == 1


def _metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_every_consumer_gets_ready_and_the_write_metrics_sum_all_workers(system) -> None:
    console_produce(system, system.env["TOPIC_PRODUCTS"], SEED_PRODUCTS)
    wait_for_products(system, ["1"])
    s = requests.Session()
    scrape = f"{system.write_url}/metrics"
    before = s.get(scrape, timeout=10).text
    customer = f"metrics-{uuid.uuid4().hex[:6]}"
    key = {"Idempotency-Key": f"m-{uuid.uuid4().hex[:8]}"}
    acks = [post(s, system, "add", {"customerId": customer, "itemId": "1", "qty": 1})
            for _ in range(7)]
    post(s, system, "add", {"customerId": customer, "itemId": "1", "qty": 1}, headers=key)
    post(s, system, "add", {"customerId": customer, "itemId": "1", "qty": 1}, headers=key)
    read_after(s, system, customer, acks[-1])
    # Whichever granian worker answers a scrape, it reports the sum over all of them.
    name = "cartstream_write_http_requests_total"
    for _ in range(6):
        after = s.get(scrape, timeout=10).text
        assert (_metric(after, name, route="/api/v1/add", status="202")
                - _metric(before, name, route="/api/v1/add", status="202")) == 9
        assert (_metric(after, "cartstream_write_idempotency_total", outcome="replayed")
                - _metric(before, "cartstream_write_idempotency_total", outcome="replayed")) == 1
    # The aggregator and every sink: partitions assigned and lag measured under the threshold.
    ports = {"aggregator": system.env["AGG_METRICS_PORT"],
             **{sink: system.env[f"SINK_{sink.upper()}_METRICS_PORT"]
                for sink in ("redis", "postgres", "catalog", "reservations")}}
    deadline = time.monotonic() + 60
    for who, port in ports.items():
        while True:
            resp = s.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            if resp.status_code == 200:
                break
            assert time.monotonic() < deadline, f"{who} not ready: {resp.text}"
            time.sleep(0.5)
    text = s.get(f"http://127.0.0.1:{ports['redis']}/metrics", timeout=5).text
    # 8 events (the replayed add is none): 9 held only after the module's earlier tests.
    assert _metric(text, "cartstream_sink_records_total", sink="redis") >= 8
