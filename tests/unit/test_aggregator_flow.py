"""The dataflow in memory: its output equals the fold of the log, whatever the workers do."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from cart_aggregator.config import Config
from cart_aggregator.flow import build_flow
from cart_aggregator.fold import fold, to_cart_details
from cart_contract import (
    EventPosition,
    EventType,
    Product,
    decode_cart_details,
    decode_cart_event,
    decode_dead_letter,
    encode_cart_event,
    encode_product,
    new_cart_event,
)

CATALOG = {str(i): Product(str(i), f"P{i}", Decimal(f"{i}.25"), 6) for i in range(1, 8)}


def workload(seed: int, n: int, customers: int = 20, partitions: int = 3):
    """Random cart events as Kafka messages, plus the catalog as messages."""
    rng = random.Random(seed)
    offsets = [0] * partitions
    msgs = []
    for _ in range(n):
        cid = f"c{rng.randrange(customers)}"
        kind = rng.choices(list(EventType), [60, 20, 10, 10])[0]
        item = str(rng.randint(1, 9)) if kind in (EventType.ITEM_ADDED, EventType.ITEM_REMOVED) \
            else None
        qty = rng.randint(1, 3) if kind is EventType.ITEM_ADDED else None
        ev = new_cart_event(kind, cid, item, qty)
        p = hash(cid) % partitions
        msgs.append(KafkaSourceMessage(cid.encode(), encode_cart_event(ev),
                                       topic="cart-events", partition=p, offset=offsets[p]))
        offsets[p] += 1
    products = [KafkaSourceMessage(pid.encode(), encode_product(prod), topic="products",
                                   partition=0, offset=i)
                for i, (pid, prod) in enumerate(CATALOG.items())]
    return msgs, products


def run_flow(cart_msgs, product_msgs, workers: int = 1, wait_s: float = 30.0):
    out: list = []
    dead: list = []
    flow = build_flow(
        Config(product_wait_s=wait_s),
        cart_source=TestingSource(cart_msgs, batch_size=50),
        product_source=TestingSource(product_msgs, batch_size=50),
        cart_sink=TestingSink(out),
        dead_letter_sink=TestingSink(dead),
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return [decode_cart_details(v) for _, v in out], [decode_dead_letter(v) for _, v in dead]


def oracle(cart_msgs):
    log = [(decode_cart_event(m.value),
            EventPosition(decode_cart_event(m.value).event_id, m.partition, m.offset))
           for m in cart_msgs]
    return {c: to_cart_details(s) for c, s in
            fold(log, lambda ev: CATALOG.get(ev.item_id or "")).items()}


def latest(records):
    best = {}
    for r in records:
        if r.customer_id not in best or r.version > best[r.customer_id].version:
            best[r.customer_id] = r
    return best


@pytest.mark.parametrize("workers", [1, 3])
def test_flow_equals_the_fold_and_keeps_per_customer_order(workers: int) -> None:
    cart_msgs, product_msgs = workload(seed=workers, n=1500)
    out, dead = run_flow(cart_msgs, product_msgs, workers)
    assert dead == []
    assert len(out) == len(cart_msgs)  # one record per event read
    expected = oracle(cart_msgs)
    assert latest(out) == expected
    # Order per customer: versions come out 1, 2, 3, ... with nothing skipped or repeated.
    by_customer: dict[str, list[int]] = {}
    for r in out:
        by_customer.setdefault(r.customer_id, []).append(r.version)
    assert all(v == list(range(1, len(v) + 1)) for v in by_customer.values())


def test_adds_wait_for_a_product_that_arrives_later() -> None:
    cart_msgs, product_msgs = workload(seed=9, n=300)
    # The catalog arrives a second after every cart event was read: adds must wait for it.
    out, _ = run_flow(cart_msgs, [TestingSource.PAUSE(timedelta(seconds=1)), *product_msgs])
    assert latest(out) == oracle(cart_msgs)
    assert not any(r.reason == "UNKNOWN_PRODUCT" and r.item_id in CATALOG
                   for rec in out for r in rec.rejected)


def test_unknown_product_is_rejected_when_input_ends() -> None:
    ev = new_cart_event(EventType.ITEM_ADDED, "c1", "404", 1)
    out, _ = run_flow([KafkaSourceMessage(b"c1", encode_cart_event(ev), topic="t", partition=0,
                                          offset=0)], [])
    assert [r.rejected[-1].reason for r in out] == ["UNKNOWN_PRODUCT"]


def test_bad_records_go_to_dead_letters_and_the_flow_goes_on() -> None:
    good = new_cart_event(EventType.CHECKOUT, "c1")
    msgs = [
        KafkaSourceMessage(b"c1", b"{not json", topic="cart-events", partition=0, offset=0),
        KafkaSourceMessage(b"c1", b'{"type":"TELEPORT"}', topic="cart-events", partition=0,
                           offset=1),
        KafkaSourceMessage(b"zz", encode_cart_event(good), topic="cart-events", partition=0,
                           offset=2),
        KafkaSourceMessage(b"c1", encode_cart_event(good), topic="cart-events", partition=0,
                           offset=3),
    ]
    bad_product = KafkaSourceMessage(b"1", b'{"productId":"1"}', topic="products", partition=0,
                                     offset=0)
    out, dead = run_flow(msgs, [bad_product])
    assert [r.version for r in out] == [1]
    assert sorted((d.source_topic, d.offset, d.reason) for d in dead) == [
        ("cart-events", 0, "INVALID_JSON"), ("cart-events", 1, "UNKNOWN_EVENT_TYPE"),
        ("cart-events", 2, "KEY_MISMATCH"), ("products", 0, "MISSING_FIELD"),
    ]
    assert dead[0].value is not None
    assert str(uuid.UUID(out[0].last_event.event_id)) == good.event_id
