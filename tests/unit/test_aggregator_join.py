"""Log order without bytewax: the product join's answers, and the fold holding events for them."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from cart_aggregator import fold
from cart_aggregator.flow import FoldLogic
from cart_aggregator.fold import (
    OFFSET,
    SHAPE,
    CustomerState,
    LineCache,
    SavedFold,
    SavedLine,
    apply,
    encode_state,
    needs_reservation,
    shape_of,
)
from cart_aggregator.join import (
    CatalogEntry,
    ProductRecord,
    expire,
    join,
    next_deadline,
    product_tuple,
    restart_waits,
)
from cart_contract import EventType, Product, decode_cart_details, new_cart_event

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
WAIT = timedelta(seconds=30)
PHONE = Product("1", "IPhone 12", Decimal("65000"), 768)


def add(offset: int, customer: str = "c1") -> tuple[str, int]:
    """A request from an add at `offset` to the join."""
    return (customer, offset)


def record(product: Product | None, pid: str = "1", offset: int = 0) -> ProductRecord:
    return ProductRecord((pid, None if product is None else product_tuple(product), offset))


def test_product_tuples_keep_the_exact_price() -> None:
    for price in ("65000", "0.10", "1E+3", "19.990"):
        p = Product("1", "X", Decimal(price), 3)
        t = product_tuple(p)
        assert Decimal(t[2]) == p.price and t[2] == price


def test_an_add_for_a_known_product_passes_with_it() -> None:
    entry, out = join(CatalogEntry(), [record(PHONE, offset=5)], T0, WAIT)
    entry, out = join(entry, [add(1)], T0, WAIT)
    assert out == [("c1", (1, product_tuple(PHONE)))]
    assert entry.offset == 5 and entry.waiting == ()


def test_an_add_for_an_unseen_product_waits_for_its_first_record() -> None:
    entry, out = join(CatalogEntry(), [add(1), add(2)], T0, WAIT)
    assert out == [] and len(entry.waiting) == 2
    assert next_deadline(entry) == T0 + WAIT
    newer = Product("1", "IPhone 12 (new)", Decimal("60000"), 10)
    entry, out = join(entry, [record(PHONE), record(newer, offset=1)], T0, WAIT)
    # Both waiting adds meet the first record read after them.
    assert out == [("c1", (1, product_tuple(PHONE))), ("c1", (2, product_tuple(PHONE)))]
    assert entry.product == product_tuple(newer) and entry.waiting == ()


def test_a_deleted_product_rejects_adds_at_once() -> None:
    entry, _ = join(CatalogEntry(), [record(PHONE), record(None, offset=1)], T0, WAIT)
    entry, out = join(entry, [add(1)], T0, WAIT)
    assert out == [("c1", (1, None))] and entry.known and entry.waiting == ()


def test_a_wait_ends_at_its_deadline_without_a_product() -> None:
    entry, _ = join(CatalogEntry(), [add(1)], T0, WAIT)
    entry, _ = join(entry, [add(2)], T0 + timedelta(seconds=10), WAIT)
    same, due = expire(entry, T0 + timedelta(seconds=29))
    assert due == [] and same is entry
    entry, due = expire(entry, T0 + timedelta(seconds=30))
    assert due == [("c1", (1, None))]
    assert next_deadline(entry) == T0 + timedelta(seconds=40)
    entry, due = expire(entry, None)  # end of a bounded input: everyone goes
    assert due == [("c1", (2, None))] and next_deadline(entry) is None


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


# ----------------------------------------------------------------- the fold's waiting

CATALOG = {str(i): product_tuple(Product(str(i), f"P{i}", Decimal(f"{i}.25"), 6))
           for i in range(1, 5)}
KINDS = ["ITEM_ADDED"] * 5 + ["ITEM_REMOVED", "ITEM_REMOVED", "CHECKOUT", "CART_CLEARED"]


def customer_log(rng: random.Random, n: int) -> list[tuple]:
    """One customer's events as parsed (fold.Wire), at offsets 0, 3, 6, ..."""
    out = []
    for i in range(n):
        kind = rng.choice(KINDS)
        item = str(rng.randint(1, 5)) if kind in ("ITEM_ADDED", "ITEM_REMOVED") else None
        ev = new_cart_event(EventType(kind), "c1", item, 1 if kind == "ITEM_ADDED" else None)
        out.append((ev.event_id, kind, "c1", item, ev.qty, ev.occurred_at, 0, i * 3, None))
    return out


def answers_of(log: list[tuple]) -> dict[int, Any]:
    """Every answer the log's events wait for, by offset: adds' products, and checkouts'
    reservations (reserved at the cart's prices; every other checkout refused OUT_OF_STOCK)."""
    state, cache, answers = None, LineCache(), {}
    for w in log:
        answer = None
        if w[1] == "ITEM_ADDED":
            answer = CATALOG.get(w[3])
        elif needs_reservation(state, w):
            assert state is not None
            answer = (("RESERVED", tuple((li.item_id, li.item_name, li.qty, li.unit_price)
                                         for li in state.lines)) if w[OFFSET] % 2 else
                      ("OUT_OF_STOCK", (state.lines[0].item_id,)))
        if answer is not None or w[1] == "ITEM_ADDED":
            answers[w[OFFSET]] = answer
        state, _ = apply(state, w, answer, cache)
    return answers


def in_order(log: list[tuple]) -> list[bytes]:
    """The records of the log folded in order, each event with its answer."""
    state, cache, out, answers = None, LineCache(), [], answers_of(log)
    for w in log:
        state, _ = apply(state, w, answers.get(w[OFFSET]), cache)
        out.append(encode_state(state))
    return out


def records(out: list[Any]) -> list[bytes]:
    """The fold's records, without its reservation requests."""
    return [x for x in out if type(x) is bytes]


def arrivals(rng: random.Random, log: list[tuple]) -> list[Any]:
    """The events in log order, each answer anywhere (before or after its event)."""
    items: list[Any] = list(log)
    for offset, answer in answers_of(log).items():
        items.insert(rng.randint(0, len(items)), (offset, answer))
    return items


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.randoms(use_true_random=False), st.integers(1, 6))
def test_the_fold_applies_events_in_log_order_whenever_the_answers_come(
        n: int, rnd: random.Random, batches: int) -> None:
    log = customer_log(rnd, n)
    items = arrivals(rnd, log)
    cuts = sorted(rnd.randint(0, len(items)) for _ in range(batches - 1))
    logic, out = FoldLogic(None), []
    for lo, hi in zip([0, *cuts], [*cuts, len(items)], strict=True):
        if rnd.random() < 0.3:  # a restart from the snapshot, as recovery does
            logic = FoldLogic(pickle.loads(pickle.dumps(logic.snapshot())))
        out += records(logic.on_batch(items[lo:hi])[0])
    assert out == in_order(log)
    assert logic.waiting is None and logic.answers is None
    assert logic.snapshot()[1:] == ((), ())


def test_events_behind_an_unanswered_add_wait_and_go_in_order() -> None:
    log = customer_log(random.Random(3), 12)
    first_add = next(i for i, w in enumerate(log) if w[1] == "ITEM_ADDED")
    logic = FoldLogic(None)
    out = records(logic.on_batch(log)[0])
    # Everything before the first add is applied; it and everything after waits.
    assert len(out) == first_add and logic.waiting == log[first_add:]
    saved = SavedFold(*logic.snapshot())
    assert saved.waiting == tuple(log[first_add:]) and saved.answers == ()
    answers = list(answers_of(log).items())
    out += records(logic.on_batch(answers[::-1])[0])  # the answers in any order
    assert out == in_order(log)


def test_a_checkout_waits_for_its_reservation_and_asks_for_it_once() -> None:
    ev = [new_cart_event(EventType.ITEM_ADDED, "c1", "2", 2), new_cart_event(EventType.CHECKOUT,
                                                                             "c1"),
          new_cart_event(EventType.ITEM_ADDED, "c1", "1", 1)]
    log = [(e.event_id, e.type.value, "c1", e.item_id, e.qty, e.occurred_at, 0, i, None)
           for i, e in enumerate(ev)]
    logic = FoldLogic(None)
    out = logic.on_batch([log[0], (0, CATALOG["2"]), log[1], log[2]])[0]
    # The add is applied; the checkout asks for its reservation and it and the next add wait:
    # no record for the checkout until its answer is in.
    assert len(records(out)) == 1
    assert [x for x in out if type(x) is not bytes] == [("c1", ev[1].event_id, 1,
                                                         (("2", 2, "2.25"),))]
    assert logic.waiting == log[1:]
    out = logic.on_batch([(1, ("RESERVED", (("2", "P2", 2, "3.00"),))), (2, CATALOG["1"])])[0]
    order, after = (decode_cart_details(r) for r in records(out))
    assert order.status == "CHECKED_OUT" and order.total_price == Decimal("6.00")
    assert order.line_items[0].added_price == Decimal("2.25")
    assert after.status == "OPEN" and after.cart_id == "c1:2"


# --------------------------------------------------------------------------- snapshots


def test_the_snapshot_is_the_layout_the_shape_fingerprints() -> None:
    log = customer_log(random.Random(5), 30)
    adds = [w for w in log if w[1] == "ITEM_ADDED"]
    logic = FoldLogic(None)
    # All answers but one of an add in the middle: a state, waiting events and early answers.
    logic.on_batch([*log, *((w[OFFSET], CATALOG.get(w[3])) for w in adds if w is not adds[3])])
    assert logic.state is not None and logic.waiting and logic.answers
    snap = pickle.loads(pickle.dumps(logic.snapshot()))
    # Plain tuples (cheap to pickle) whose layout is SavedFold's, CustomerState's, SavedLine's.
    assert type(snap) is tuple and len(snap) == len(SavedFold._fields)
    state = SavedFold(*snap).state
    assert type(state) is tuple and len(state) == len(fold.fields_of(CustomerState))
    lines = dict(zip(fold.fields_of(CustomerState), state, strict=True))["lines"]
    assert lines and all(type(li) is tuple and len(li) == len(SavedLine._fields) for li in lines)
    assert FoldLogic(snap).snapshot() == snap


def test_the_shape_changes_with_any_snapshotted_field() -> None:
    class Other(NamedTuple):
        state: Any
        waiting: Any
        early: Any  # renamed

    assert shape_of(Other, CustomerState, SavedLine, fold.WIRE_FIELDS,
                    fold.PRODUCT_FIELDS) != SHAPE
    assert shape_of(SavedFold, CustomerState, SavedLine, (*fold.WIRE_FIELDS, "x"),
                    fold.PRODUCT_FIELDS) != SHAPE
    assert shape_of(SavedFold, CustomerState, SavedLine, fold.WIRE_FIELDS,
                    fold.PRODUCT_FIELDS) == SHAPE


def test_only_a_checkout_the_fold_would_accept_asks_for_stock() -> None:
    # A version conflict, an empty or closed cart and a repeat are decided by the fold alone:
    # asking would reserve stock for a checkout that never happens.
    add = new_cart_event(EventType.ITEM_ADDED, "c1", "2", 1)
    state, _ = apply(None, (add.event_id, "ITEM_ADDED", "c1", "2", 1, add.occurred_at, 0, 0,
                            None), CATALOG["2"], LineCache())
    out = new_cart_event(EventType.CHECKOUT, "c1")

    def wire(expected: int | None, eid: str = out.event_id) -> tuple:
        return (eid, "CHECKOUT", "c1", None, None, out.occurred_at, 0, 1, expected)

    assert needs_reservation(state, wire(None)) and needs_reservation(state, wire(1))
    assert not needs_reservation(state, wire(0))  # VERSION_CONFLICT
    assert not needs_reservation(state, wire(None, add.event_id))  # a repeat
    assert not needs_reservation(None, wire(None))  # no cart: NO_OPEN_CART
