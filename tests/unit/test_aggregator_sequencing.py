"""The keyed stages' logic without bytewax: stamping, the product join, the resequencer."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from cart_aggregator.sequencing import (
    PRODUCT,
    VERSION,
    CatalogEntry,
    ProductRecord,
    expire,
    join,
    next_deadline,
    product_tuple,
    release_in_order,
    restart_waits,
    stamp,
    to_wire,
)
from cart_contract import EventPosition, EventType, Product, new_cart_event

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
WAIT = timedelta(seconds=30)
PHONE = Product("1", "IPhone 12", Decimal("65000"), 768)


def add(version: int, item: str = "1", customer: str = "c1", offset: int = 0):
    ev = new_cart_event(EventType.ITEM_ADDED, customer, item, 1)
    return (version, *to_wire(ev, 2, offset)[1:])


def record(product: Product | None, pid: str = "1", offset: int = 0) -> ProductRecord:
    return ProductRecord((pid, None if product is None else product_tuple(product), offset))


def test_the_wire_form_round_trips_the_event_and_its_position() -> None:
    ev = new_cart_event(EventType.ITEM_REMOVED, "c1", "9", None)
    # Flat str/int tuples: what crosses processes must pickle cheaply.
    w = to_wire(ev, 4, 17)
    assert all(type(x) in (str, int, type(None)) for x in w)
    assert pickle.loads(pickle.dumps(w)) == w


def test_product_tuples_keep_the_exact_price() -> None:
    for price in ("65000", "0.10", "1E+3", "19.990"):
        p = Product("1", "X", Decimal(price), 3)
        t = product_tuple(p)
        assert Decimal(t[2]) == p.price and t[2] == price


def test_stamp_numbers_each_customer_event_after_the_last() -> None:
    last, out = stamp(7, [to_wire(new_cart_event(EventType.CHECKOUT, "c1"), 0, i)
                          for i in range(3)])
    assert last == 10
    assert [w[VERSION] for w in out] == [8, 9, 10]


def test_an_add_for_a_known_product_passes_with_it() -> None:
    entry, out = join(CatalogEntry(), [record(PHONE, offset=5)], T0, WAIT)
    entry, out = join(entry, [add(1)], T0, WAIT)
    assert [w[PRODUCT] for w in out] == [product_tuple(PHONE)]
    assert entry.offset == 5 and entry.waiting == ()


def test_an_add_for_an_unseen_product_waits_for_it_and_gets_that_version() -> None:
    entry, out = join(CatalogEntry(), [add(1), add(2)], T0, WAIT)
    assert out == [] and len(entry.waiting) == 2
    assert next_deadline(entry) == T0 + WAIT
    newer = Product("1", "IPhone 12 (new)", Decimal("60000"), 10)
    entry, out = join(entry, [record(PHONE), record(newer, offset=1)], T0, WAIT)
    # Both waiting adds meet the first record read after them.
    assert [(w[VERSION], w[PRODUCT]) for w in out] == [(1, product_tuple(PHONE)),
                                                       (2, product_tuple(PHONE))]
    assert entry.product == product_tuple(newer) and entry.waiting == ()


def test_a_deleted_product_rejects_adds_at_once() -> None:
    entry, _ = join(CatalogEntry(), [record(PHONE), record(None, offset=1)], T0, WAIT)
    entry, out = join(entry, [add(1)], T0, WAIT)
    assert out[0][PRODUCT] is None and entry.known and entry.waiting == ()


def test_a_wait_ends_at_its_deadline_without_a_product() -> None:
    entry, _ = join(CatalogEntry(), [add(1)], T0, WAIT)
    entry, _ = join(entry, [add(2)], T0 + timedelta(seconds=10), WAIT)
    same, due = expire(entry, T0 + timedelta(seconds=29))
    assert due == [] and same is entry
    entry, due = expire(entry, T0 + timedelta(seconds=30))
    assert [w[VERSION] for w in due] == [1] and due[0][PRODUCT] is None
    assert next_deadline(entry) == T0 + timedelta(seconds=40)
    entry, due = expire(entry, None)  # end of a bounded input: everyone goes
    assert [w[VERSION] for w in due] == [2] and next_deadline(entry) is None


def test_a_restart_gives_waiting_adds_a_full_wait_again() -> None:
    entry, _ = join(CatalogEntry(), [add(1)], T0, WAIT)
    later = T0 + timedelta(hours=1)
    assert next_deadline(restart_waits(entry, later, WAIT)) == later + WAIT
    assert restart_waits(CatalogEntry(), later, WAIT) == CatalogEntry()


def test_join_states_are_immutable_values() -> None:
    entry, _ = join(CatalogEntry(), [add(1)], T0, WAIT)
    before = pickle.dumps(entry)
    join(entry, [add(2), record(PHONE)], T0, WAIT)
    assert pickle.dumps(entry) == before


def test_release_in_order_holds_early_events_until_their_predecessor() -> None:
    early: dict = {}
    ready, parked = release_in_order(1, early, [add(2), add(4)])
    assert ready == [] and parked == 2 and sorted(early) == [2, 4]
    ready, parked = release_in_order(1, early, [add(1)])
    assert [w[VERSION] for w in ready] == [1, 2] and parked == 0 and sorted(early) == [4]
    ready, _ = release_in_order(3, early, [add(3)])
    assert [w[VERSION] for w in ready] == [3, 4] and early == {}


def test_release_in_order_drops_repeats() -> None:
    ready, parked = release_in_order(5, {}, [add(3), add(5)])
    assert [w[VERSION] for w in ready] == [5] and parked == 0


@given(st.integers(1, 60), st.randoms(use_true_random=False), st.integers(1, 8))
def test_any_arrival_order_is_released_as_1_to_n(n: int, rnd: random.Random, batches: int) -> None:
    items = [add(v) for v in range(1, n + 1)]
    rnd.shuffle(items)
    cuts = sorted(rnd.randint(0, n) for _ in range(batches - 1))
    early: dict = {}
    released: list[int] = []
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        ready, _ = release_in_order(len(released) + 1, early, items[lo:hi])
        released += [w[VERSION] for w in ready]
    assert released == list(range(1, n + 1)) and early == {}


def test_snapshot_tuples_round_trip_every_customer_state() -> None:
    from cart_aggregator.fold import apply
    from cart_aggregator.snapshots import (
        ACTUAL,
        CUSTOMER_FIELDS,
        LINE_FIELDS,
        POSITION_FIELDS,
        REJECTION_FIELDS,
        customer_from_tuple,
        customer_to_tuple,
    )

    # The conversion names every field of the fold's classes: a new field must be added there.
    assert ACTUAL == (CUSTOMER_FIELDS, LINE_FIELDS, POSITION_FIELDS, REJECTION_FIELDS)
    rng = random.Random(2)
    catalog = {str(i): Product(str(i), f"P{i}", Decimal(f"{i}.{i}5"), 5) for i in range(1, 5)}
    state = None
    for i in range(300):
        kind = rng.choice(list(EventType))
        item = str(rng.randint(1, 5)) if kind in (EventType.ITEM_ADDED,
                                                  EventType.ITEM_REMOVED) else None
        ev = new_cart_event(kind, "c1", item, rng.randint(1, 3) if kind is EventType.ITEM_ADDED
                            else None)
        state = apply(state, ev, catalog.get(item or ""), EventPosition(ev.event_id, 1, i))
        t = customer_to_tuple(state)
        assert customer_from_tuple(pickle.loads(pickle.dumps(t))) == state
        assert [str(li.unit_price) for li in customer_from_tuple(t).lines] == [
            str(li.unit_price) for li in state.lines]
