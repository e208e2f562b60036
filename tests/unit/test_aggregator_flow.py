"""The dataflow in memory: its records equal the fold of the log, whatever the workers do."""

from __future__ import annotations

import pickle
import random
import zlib
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from cart_aggregator import metrics
from cart_aggregator.config import Config
from cart_aggregator.flow import FoldLogic, build_flow
from cart_aggregator.fold import OFFSET, TYPE, apply, encode_state, needs_reservation
from cart_aggregator.join import product_tuple
from cart_contract import (
    CartEvent,
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
from tests.support.fold_model import ReservationModel, fold, reserved_as_added, to_cart_details
from tests.support.loopback import Loopback

# Products 1-8 exist (little stock, so some adds hit INSUFFICIENT_STOCK); 9 never does.
CATALOG = {str(i): Product(str(i), f"P{i}", Decimal(f"{i}.25"), 6) for i in range(1, 9)}
KINDS = [EventType.ITEM_ADDED] * 6 + [EventType.ITEM_REMOVED] * 2 + [EventType.CHECKOUT,
                                                                      EventType.CART_CLEARED]


def cart_msg(ev: CartEvent, partition: int, offset: int, key: bytes | None = None):
    return KafkaSourceMessage(ev.customer_id.encode() if key is None else key,
                              encode_cart_event(ev), topic="cart-events", partition=partition,
                              offset=offset)


def product_msgs(catalog: dict[str, Product] = CATALOG) -> list:
    return [KafkaSourceMessage(pid.encode(), encode_product(p), topic="products", partition=0,
                               offset=i) for i, (pid, p) in enumerate(catalog.items())]


def workload(seed: int, n: int, customers: int = 40, partitions: int = 3) -> list:
    """Random cart events in log order, a few of them client retries (same eventId)."""
    rng = random.Random(seed)
    offsets = [0] * partitions
    msgs: list = []
    for _ in range(n):
        if msgs and rng.random() < 0.03:
            ev = decode_cart_event(rng.choice(msgs[-30:]).value)
        else:
            kind = rng.choice(KINDS)
            item = str(rng.randint(1, 9)) if kind in (EventType.ITEM_ADDED,
                                                      EventType.ITEM_REMOVED) else None
            ev = new_cart_event(kind, f"c{rng.randrange(customers)}", item,
                                rng.randint(1, 3) if kind is EventType.ITEM_ADDED else None)
        p = zlib.crc32(ev.customer_id.encode()) % partitions
        msgs.append(cart_msg(ev, p, offsets[p]))
        offsets[p] += 1
    return msgs


def run_flow(cart_items: list, product_items: list, workers: int = 1, wait_s: float = 30.0,
             batch_size: int = 50, loop: Loopback | None = None, reserved: list | None = None,
             **run_kwargs) -> tuple[list, list]:
    out: list = []
    dead: list = []
    loop = loop or Loopback()
    flow = build_flow(
        Config(product_wait_s=wait_s),
        cart_source=TestingSource(cart_items, batch_size=batch_size),
        product_source=TestingSource(product_items, batch_size=batch_size),
        cart_sink=TestingSink(out),
        dead_letter_sink=TestingSink(dead),
        reservation_source=loop.source(),
        reservation_sink=loop.sink(),
        reserved_sink=TestingSink([] if reserved is None else reserved),
    )
    if workers == 1:
        run_main(flow, **run_kwargs)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out, [decode_dead_letter(v) for _, v in dead]


def expected_records(cart_msgs: list, loop: Loopback | None,
                     catalog: dict[str, Product] = CATALOG) -> dict[str, bytes]:
    """The oracle: the fold of the log, encoded as the aggregator must publish it.

    Each checkout's answer is the reservation model's decision over the request log as the
    flow wrote it (`loop`; None: every checkout reserved as added, for the control test).
    """
    log = []
    for m in cart_msgs:
        ev = decode_cart_event(m.value)
        log.append((ev, EventPosition(ev.event_id, m.partition, m.offset)))
    model = ReservationModel()
    for record in loop.decoded() if loop else []:
        model.feed(record)

    def checkout_at(ev, state):
        if loop is None:
            return reserved_as_added(state)
        return model.answers[ev.customer_id, ev.event_id]  # KeyError: never asked

    states = fold(log, lambda ev: catalog.get(ev.item_id or ""), checkout_at)
    return {c: encode_cart_details(to_cart_details(s)) for c, s in states.items()}


def latest(out: list) -> dict[str, bytes]:
    """Each customer's record with the highest version."""
    best: dict[str, tuple[int, bytes]] = {}
    for key, value in out:
        v = decode_cart_details(value).customer_version
        if key not in best or v > best[key][0]:
            best[key] = (v, value)
    return {k: value for k, (_, value) in best.items()}


def versions_by_customer(out: list) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for key, value in out:
        seen.setdefault(key, []).append(decode_cart_details(value).customer_version)
    return seen


@pytest.mark.parametrize("workers", [1, 3])
def test_records_equal_the_fold_of_the_log_in_per_customer_order(workers: int) -> None:
    cart = workload(seed=workers, n=2000)
    loop = Loopback()
    out, dead = run_flow(cart, product_msgs(), workers, loop=loop)
    assert dead == []
    assert len(out) == len(cart)  # one record per event read, duplicates and rejections too
    # Each customer's records come out as versions 1, 2, 3, ...: nothing lost, skipped or
    # applied twice, in the log's order.
    assert all(v == list(range(1, len(v) + 1)) for v in versions_by_customer(out).values())
    assert latest(out) == expected_records(cart, loop)
    # Stock ran out (6 units a product): some checkouts got refused, some reserved.
    reasons = {r.reason for _, v in out for r in decode_cart_details(v).rejected}
    assert "OUT_OF_STOCK" in reasons
    assert any(decode_cart_details(v).status == "CHECKED_OUT" for _, v in out)


def test_without_holding_events_for_their_answer_the_records_differ(monkeypatch) -> None:
    # The control for the test above: apply each event as soon as it can be (an add once its
    # answer is in too) without holding later events behind an add: the comparison must fail.
    def on_arrival(self, values):
        adds, early = self.__dict__.setdefault("adds", {}), self.__dict__.setdefault("early", {})
        out = []
        for v in values:
            if len(v) == 2:  # an answer
                w, product = adds.pop(v[0], None), v[1]
                if w is None:
                    early[v[0]] = product
                    continue
            elif v[TYPE] == "ITEM_ADDED":
                if v[OFFSET] not in early:
                    adds[v[OFFSET]] = v
                    continue
                w, product = v, early.pop(v[OFFSET])
            else:
                w, product = v, None
                if needs_reservation(self.state, w):  # reserved at once, at the cart's prices
                    product = ("RESERVED", tuple((li.item_id, li.item_name, li.qty, li.unit_price)
                                                 for li in self.state.lines))
            self.state, _ = apply(self.state, w, product, self.lines)
            out.append(encode_state(self.state))
        return out, False

    monkeypatch.setattr(FoldLogic, "on_batch", on_arrival)
    cart = workload(seed=3, n=2000)
    out, _ = run_flow(cart, product_msgs(), workers=3)
    assert len(out) == len(cart)
    assert latest(out) != expected_records(cart, None)


def test_outcomes_are_counted() -> None:
    before = [metrics.total(i) for i in (metrics.APPLIED, metrics.REJECTED, metrics.DUPLICATE)]
    cart = workload(seed=5, n=600)
    run_flow(cart, product_msgs())
    after = [metrics.total(i) for i in (metrics.APPLIED, metrics.REJECTED, metrics.DUPLICATE)]
    deltas = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(deltas) == len(cart) and all(d > 0 for d in deltas)


def test_adds_wait_for_a_catalog_that_arrives_later() -> None:
    cart = workload(seed=9, n=400)
    # Every cart event is read a second before the first product record.
    loop = Loopback(idle_s=3.0)  # longer than the pause
    out, _ = run_flow(cart, [TestingSource.PAUSE(timedelta(seconds=1)), *product_msgs()],
                      loop=loop)
    assert latest(out) == expected_records(cart, loop)
    rejected = [r for _, v in out for r in decode_cart_details(v).rejected]
    assert not any(r.reason == "UNKNOWN_PRODUCT" and r.item_id in CATALOG for r in rejected)


def test_a_wait_ends_with_unknown_product_when_the_product_is_too_late() -> None:
    ev = new_cart_event(EventType.ITEM_ADDED, "c1", "7", 1)
    late = [TestingSource.PAUSE(timedelta(seconds=1.5)), *product_msgs()]
    out, _ = run_flow([cart_msg(ev, 0, 0)], late, wait_s=0.2)
    assert [r.reason for r in decode_cart_details(out[0][1]).rejected] == ["UNKNOWN_PRODUCT"]
    out, _ = run_flow([cart_msg(ev, 0, 0)], late, wait_s=30)
    assert [li.item_name for li in decode_cart_details(out[0][1]).line_items] == ["P7"]


def test_a_product_never_seen_is_rejected_when_the_input_ends() -> None:
    ev = new_cart_event(EventType.ITEM_ADDED, "c1", "404", 1)
    out, _ = run_flow([cart_msg(ev, 0, 0)], [])
    assert [r.reason for r in decode_cart_details(out[0][1]).rejected] == ["UNKNOWN_PRODUCT"]


def test_a_deleted_product_is_rejected_without_waiting() -> None:
    tombstone = KafkaSourceMessage(b"1", None, topic="products", partition=0, offset=99)
    ev = new_cart_event(EventType.ITEM_ADDED, "c1", "1", 1)
    # The cart event is read after both catalog records.
    out, _ = run_flow([TestingSource.PAUSE(timedelta(seconds=0.5)), cart_msg(ev, 0, 0)],
                      [*product_msgs(), tombstone], wait_s=60)
    assert [r.reason for r in decode_cart_details(out[0][1]).rejected] == ["UNKNOWN_PRODUCT"]


def test_bad_records_go_to_the_dead_letters_and_the_flow_goes_on() -> None:
    good = new_cart_event(EventType.ITEM_ADDED, "c1", "1", 1)
    raw = [
        (b"c1", b"{not json"),
        (b"c1", b'{"type":"TELEPORT","eventId":"x"}'),
        (b"c1", encode_cart_event(good).replace(b'"qty":1', b'"qty":"1"')),
        (b"zz", encode_cart_event(good)),
        (None, encode_cart_event(good)),
        (b"c1", None),
        (b"c1", encode_cart_event(good)),
    ]
    msgs = [KafkaSourceMessage(k, v, topic="cart-events", partition=2, offset=10 + i)
            for i, (k, v) in enumerate(raw)]
    bad_products = [
        KafkaSourceMessage(b"2", b'{"productId":"2"}', topic="products", partition=1, offset=0),
        KafkaSourceMessage(b"3", b'{"productId":"3","productName":"x","price":"-1","stockQty":1}',
                           topic="products", partition=1, offset=1),
        KafkaSourceMessage(b"\xff", None, topic="products", partition=1, offset=2),
    ]
    out, dead = run_flow(msgs, [*product_msgs(), *bad_products])
    assert [decode_cart_details(v).customer_version for _, v in out] == [1]
    assert decode_cart_details(out[0][1]).last_event.offset == 16
    assert sorted((d.source_topic, d.partition, d.offset, d.reason) for d in dead) == [
        ("cart-events", 2, 10, "INVALID_JSON"),
        ("cart-events", 2, 11, "UNKNOWN_EVENT_TYPE"),
        ("cart-events", 2, 12, "WRONG_TYPE"),
        ("cart-events", 2, 13, "KEY_MISMATCH"),
        ("cart-events", 2, 14, "KEY_MISMATCH"),
        ("cart-events", 2, 15, "INVALID_JSON"),
        ("products", 1, 0, "MISSING_FIELD"),
        ("products", 1, 1, "INVALID_PRICE"),
        ("products", 1, 2, "INVALID_ID"),
    ]
    by_offset = {(d.source_topic, d.offset): d for d in dead}
    for i, (key, value) in enumerate(raw[:6]):  # the original bytes travel with the reason
        letter = by_offset[("cart-events", 10 + i)]
        assert (letter.key, letter.value) == (key, value)
        assert letter.stage == "aggregator" and letter.message


def test_a_resumed_flow_neither_loses_nor_double_applies_events(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 2)
    cart = workload(seed=11, n=1500)
    # Two crashes; each run resumes from the last snapshot (one per activation here). Each run
    # gets its own list: TestingSource's resume index does not count ABORT markers.
    runs = [[*cart[:500], TestingSource.ABORT(), *cart[500:]],
            [*cart[:1000], TestingSource.ABORT(), *cart[1000:]],
            cart]
    out: list = []
    dead: list = []
    products = TestingSource(product_msgs(), batch_size=3)
    loop = Loopback()  # the request topic outlives the runs, as Kafka does
    for items in runs:
        before = len(out)
        run_main(build_flow(Config(), cart_source=TestingSource(items, batch_size=50),
                            product_source=products, cart_sink=TestingSink(out),
                            dead_letter_sink=TestingSink(dead),
                            reservation_source=loop.source(), reservation_sink=loop.sink(),
                            reserved_sink=TestingSink([])),
                 epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(tmp_path)))
        assert len(out) > before
    assert latest(out) == expected_records(cart, loop)
    # A resume may repeat records, never skip a version.
    assert all(sorted(set(v)) == list(range(1, max(v) + 1))
               for v in versions_by_customer(out).values())
    assert len(out) >= len(cart)


def test_a_customers_state_does_not_grow_with_its_events() -> None:
    rng = random.Random(4)
    fold_logic = FoldLogic(None)
    sizes = []
    offset = 0
    for _ in range(40):
        items: list = []
        for _ in range(50):
            kind = rng.choice(KINDS)
            item = str(rng.randint(1, 8)) if kind in (EventType.ITEM_ADDED,
                                                      EventType.ITEM_REMOVED) else None
            ev = new_cart_event(kind, "c1", item, 1 if kind is EventType.ITEM_ADDED else None)
            items.append((ev.event_id, kind.value, "c1", item, ev.qty, ev.occurred_at, 0, offset,
                          None))
            if kind is EventType.ITEM_ADDED:  # the answer, somewhere after its add
                items.insert(rng.randint(len(items), len(items) + 3),
                             (offset, product_tuple(CATALOG[item])))
            offset += 1
        answers_late = [x for x in items if len(x) == 2 and x[0] >= offset - 2]
        out, _ = fold_logic.on_batch([x for x in items if x not in answers_late])
        out2, _ = fold_logic.on_batch(answers_late)
        records = [r for r in out + out2 if type(r) is bytes]
        requests = [r for r in out + out2 if type(r) is not bytes]
        while requests:  # each checkout's reservation, answered as the reservation stage would
            _, _, at, lines = requests.pop()
            more, _ = fold_logic.on_batch([(at, ("RESERVED", tuple(
                (i, CATALOG[i].product_name, q, p) for i, q, p in lines)))])
            records += [r for r in more if type(r) is bytes]
            requests += [r for r in more if type(r) is not bytes]
        assert len(records) == 50
        sizes.append(len(pickle.dumps(fold_logic.snapshot())))
    # Nothing is left waiting, and the snapshot after 2,000 events is no bigger than after 200.
    assert fold_logic.waiting is None and fold_logic.snapshot()[1:] == ((), ())
    assert fold_logic.state is not None and fold_logic.state.version == 2000
    assert max(sizes[-10:]) <= max(sizes[:10]) + 200
