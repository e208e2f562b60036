"""The production fold (`cart_aggregator.fold`) against the readable model: identical records."""

from __future__ import annotations

import pickle
import random
import uuid
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cart_aggregator import metrics
from cart_aggregator.fold import (
    CustomerState,
    LineCache,
    Wire,
    apply,
    encode_state,
    from_snapshot,
    to_snapshot,
)
from cart_aggregator.join import product_tuple
from cart_contract import (
    CartEvent,
    EventPosition,
    EventType,
    Product,
    encode_cart_details,
    new_cart_event,
)
from cart_contract.limits import LINES_MAX
from tests.support import fold_model as model

ADD, REMOVE, CLEAR, CHECKOUT = (EventType.ITEM_ADDED, EventType.ITEM_REMOVED,
                                EventType.CART_CLEARED, EventType.CHECKOUT)

# Prices whose rounding, exponent or sign could print differently if formatted another way.
PRICES = ["65000", "0.10", "1E+3", "19.990", "0.005", "0.015", "12345.675", "0", "7",
          "999999999.99", "0.0049", "2.5E-3"]
NAMES = ["Cable", 'Quote " and \\ backslash', "Prodüct “4”", "tab\tnew\nline", "\u2028", "x" * 200]

products = st.builds(
    Product,
    st.sampled_from(["1", "2", "3", "4"]),
    st.sampled_from(NAMES),
    st.sampled_from(PRICES).map(Decimal),
    st.integers(0, 9),
)
# occurredAt is kept as given: anything datetime.fromisoformat accepts, quotes included.
TIMES = ["2026-11-22T10:00:00Z", '2026-11-22"10:00:00', "2026-11-22\\10:00:00+01:00",
         "2026-11-22é10:00", "2026-11-22"]

steps = st.lists(
    st.tuples(
        st.sampled_from([ADD, ADD, ADD, REMOVE, REMOVE, CLEAR, CHECKOUT]),
        st.sampled_from(["1", "2", "3", "4", "9"]),
        st.one_of(st.none(), st.integers(1, 5)),
        # 0: a new event, else re-send one of the last three (a client retry)
        st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2, 3]),
        st.one_of(st.none(), st.none(), st.none(), products),  # a catalog change first
        st.sampled_from(TIMES),
        st.booleans(),  # snapshot and restore the state before this event
        st.one_of(st.none(), st.none(), st.integers(0, 12)),  # If-Match
    ),
    max_size=120,
)


def checkout_answer(state: model.CustomerState, catalog: dict[str, Product]) -> tuple:
    """A reservation stage's answer with `catalog` in force and nothing else reserved."""
    gone = tuple(li.item_id for li in state.lines if li.item_id not in catalog)
    if gone:
        return "PRODUCT_UNAVAILABLE", gone
    short = tuple(li.item_id for li in state.lines if li.qty > catalog[li.item_id].stock_qty)
    if short:
        return "OUT_OF_STOCK", short
    return "RESERVED", tuple((li.item_id, catalog[li.item_id].product_name, li.qty,
                              str(catalog[li.item_id].price)) for li in state.lines)


def answer(state, ev: CartEvent, catalog: dict[str, Product]) -> tuple[Any, Any]:
    """(the model's answer, the fast fold's): an add's product, a checkout's reservation."""
    if ev.type is ADD:
        p = catalog.get(ev.item_id or "")
        return p, None if p is None else product_tuple(p)
    if model.needs_answer(state, ev):
        a = checkout_answer(state, catalog)
        return a, a
    return None, None


def to_wire(ev: CartEvent, partition: int, offset: int) -> Wire:
    """An event as the flow's parse step makes it."""
    return (ev.event_id, ev.type.value, ev.customer_id, ev.item_id, ev.qty, ev.occurred_at,
            partition, offset, ev.expected_version)


def event_of(etype: EventType, item: str, qty: int | None, at: str,
             expected: int | None = None) -> CartEvent:
    return new_cart_event(etype, "cust-1", item if etype in (ADD, REMOVE) else None,
                          (qty or 1) if etype is ADD else (qty if etype is REMOVE else None),
                          str(uuid.uuid4()), at, expected)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_every_record_and_snapshot_equals_the_oracles(cmds) -> None:
    catalog = {"1": Product("1", "IPhone 12", Decimal("65000"), 768),
               "2": Product("2", "Cable", Decimal("0.10"), 5)}
    cache = LineCache(limit=7)  # small: the cache starting over must change nothing
    oracle: model.CustomerState | None = None
    fast = None
    sent: list[CartEvent] = []
    for offset, (etype, item, qty, retry, change, at, restore, expected) in enumerate(cmds):
        if change is not None:
            catalog[change.product_id] = change
        ev = (sent[-retry] if 0 < retry <= len(sent)
              else event_of(etype, item, qty, at, expected))
        sent.append(ev)
        product, fast_answer = answer(oracle, ev, catalog)
        if restore and fast is not None:
            fast = from_snapshot(pickle.loads(pickle.dumps(to_snapshot(fast))), cache)
        before = oracle
        oracle = model.apply(oracle, ev, product, EventPosition(ev.event_id, 3, offset))
        fast, outcome = apply(fast, to_wire(ev, 3, offset), fast_answer, cache)
        assert type(fast) is CustomerState
        assert encode_state(fast) == encode_cart_details(model.to_cart_details(oracle))
        assert to_snapshot(fast) == model.saved(oracle)
        rejected = oracle.rejected != (before.rejected if before else ())
        duplicate = before is not None and ev.event_id in {
            str(uuid.UUID(bytes=before.recent_event_ids[i:i + 16]))
            for i in range(0, len(before.recent_event_ids), 16)}
        assert outcome == (metrics.DUPLICATE if duplicate else
                           metrics.REJECTED if rejected else metrics.APPLIED)


def test_a_state_restored_from_the_oracles_snapshot_goes_on_identically() -> None:
    cache = LineCache()
    catalog = {"1": Product("1", "P1", Decimal("1E+3"), 9)}
    oracle = None
    events = [event_of(ADD, "1", 2, "2026-11-22T10:00:00Z"),
              event_of(REMOVE, "1", 1, "2026-11-22T10:00:01Z"),
              event_of(ADD, "9", 1, "2026-11-22T10:00:02Z")]
    for i, ev in enumerate(events[:2]):
        oracle = model.apply(oracle, ev, catalog.get(ev.item_id or ""),
                             EventPosition(ev.event_id, 0, i))
    assert oracle is not None
    fast = from_snapshot(model.saved(oracle), cache)
    oracle = model.apply(oracle, events[2], None, EventPosition(events[2].event_id, 0, 2))
    fast, _ = apply(fast, to_wire(events[2], 0, 2), None, cache)
    assert encode_state(fast) == encode_cart_details(model.to_cart_details(oracle))


def test_carts_share_their_lines() -> None:
    cache = LineCache()
    p = product_tuple(Product("1", "P1", Decimal("2.50"), 9))
    a, _ = apply(None, to_wire(event_of(ADD, "1", 2, "2026-11-22"), 0, 0), p, cache)
    b, _ = apply(None, to_wire(event_of(ADD, "1", 2, "2026-11-22"), 0, 1), p, cache)
    assert a.lines[0] is b.lines[0]


def test_a_long_seeded_walk_equals_the_oracle() -> None:
    """Thousands of steps over a few customers: every rule, window and bound is reached."""
    import random

    rng = random.Random(20261122)
    cache = LineCache(limit=50)
    catalog = {str(i): Product(str(i), rng.choice(NAMES), Decimal(rng.choice(PRICES)),
                               rng.randint(0, 12)) for i in range(1, 5)}
    oracles: dict[str, model.CustomerState] = {}
    fasts: dict[str, tuple] = {}
    sent: list[CartEvent] = []
    for offset in range(6000):
        if rng.random() < 0.02:
            pid = str(rng.randint(1, 4))
            catalog[pid] = Product(pid, rng.choice(NAMES), Decimal(rng.choice(PRICES)),
                                   rng.randint(0, 12))
        if rng.random() < 0.005:  # a product leaves the catalog: PRODUCT_UNAVAILABLE
            catalog.pop(str(rng.randint(1, 4)), None)
        if sent and rng.random() < 0.1:
            ev = rng.choice(sent[-40:])  # retries, some beyond the dedupe window
        else:
            etype = rng.choice([ADD, ADD, ADD, REMOVE, REMOVE, CLEAR, CHECKOUT])
            ev = new_cart_event(etype, f"c{rng.randint(1, 3)}",
                                str(rng.randint(1, 5)) if etype in (ADD, REMOVE) else None,
                                rng.randint(1, 4) if etype is ADD else
                                rng.choice([None, 1, 2, 3]) if etype is REMOVE else None,
                                occurred_at=rng.choice(TIMES))
        sent.append(ev)
        cid = ev.customer_id
        product, fast_answer = answer(oracles.get(cid), ev, catalog)
        oracles[cid] = model.apply(oracles.get(cid), ev, product,
                                   EventPosition(ev.event_id, 1, offset))
        fasts[cid], _ = apply(fasts.get(cid), to_wire(ev, 1, offset), fast_answer, cache)
        assert encode_state(fasts[cid]) == encode_cart_details(
            model.to_cart_details(oracles[cid]))
        assert to_snapshot(fasts[cid]) == model.saved(oracles[cid])
        if rng.random() < 0.05:
            fasts[cid] = from_snapshot(to_snapshot(fasts[cid]), cache)
    assert all(len(s.rejected) == 10 for s in oracles.values())


def test_a_walk_at_the_cart_limits_equals_the_oracle() -> None:
    rng = random.Random(15)
    cache = LineCache()
    catalog = {str(i): Product(str(i), f"P{i}", Decimal(rng.choice(["1000000000.00", "0.01",
                                                                     "999999999.99", "7"])),
                               10**6) for i in range(230)}
    oracle, fast, reasons, most = None, None, set(), 0
    for offset in range(3000):
        # Mostly adds, so carts reach LINES_MAX lines; a checkout now and then starts over.
        etype = rng.choice([ADD] * 20 + [REMOVE] if offset % 700 else [CHECKOUT, CLEAR])
        ev = new_cart_event(etype, "c", str(rng.randrange(230)) if etype in (ADD, REMOVE) else None,
                            rng.choice([1, 5000, 9999, 10_000]) if etype is ADD else None,
                            occurred_at="2026-11-22T10:00:00Z")
        product, wired = answer(oracle, ev, catalog)
        oracle = model.apply(oracle, ev, product, EventPosition(ev.event_id, 0, offset))
        fast, _ = apply(fast, to_wire(ev, 0, offset), wired, cache)
        assert encode_state(fast) == encode_cart_details(model.to_cart_details(oracle))
        reasons |= {r.reason for r in oracle.rejected}
        most = max(most, len(oracle.lines))
    assert "CART_LIMIT" in reasons and most == LINES_MAX
