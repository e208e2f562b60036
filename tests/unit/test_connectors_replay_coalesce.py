"""Replay's pure parts: coalescing a batch equals writing it record by record, the coverage of
the event log, and the cart sinks decoding a batch once for both (no broker, no store)."""

from __future__ import annotations

from typing import Any

import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from cart_contract import CartDetails, encode_cart_details
from connectors.records import CartItem, parse_carts
from connectors.replay import CartSinks, Coverage
from connectors.sinks import PostgresCartWriter, Prepared, RedisCartWriter
from tests.support.connectors import FakeMessage, cart


def guarded(store: dict[str, int], key: str, version: int) -> None:
    """The version guard of both stores: a record lands only over an older one."""
    if store.get(key, -1) < version:
        store[key] = version


def stores_after(items: list[CartItem]) -> dict[str, dict[str, int]]:
    """What the guarded stores hold after `items`, in this order: Redis `cart:{customer}`,
    PostgreSQL `customers` and `carts` (one row per opened cart: an order keeps its own)."""
    out: dict[str, dict[str, int]] = {"redis": {}, "customers": {}, "carts": {}}
    for it in items:
        c = it.cart
        guarded(out["redis"], c.customer_id, c.customer_version)
        guarded(out["customers"], c.customer_id, c.customer_version)
        if c.generation > 0:
            guarded(out["carts"], c.cart_id, c.customer_version)
    return out


def history(steps: list[tuple[int, bool]]) -> list[CartDetails]:
    """Each step: (customer, check out): the customer's next version; a checkout closes its
    cart (the order keeps that version) and the next record opens the next generation."""
    versions: dict[int, int] = {}
    generations: dict[int, int] = {}
    out = []
    for customer, checkout in steps:
        v = versions[customer] = versions.get(customer, 0) + 1
        g = generations.setdefault(customer, 1)
        out.append(cart(f"c{customer}", v, generation=g, qty=v, checked_out=checkout))
        if checkout:
            generations[customer] = g + 1
    return out


def writers() -> tuple[RedisCartWriter, PostgresCartWriter]:
    # Neither connects before its first write.
    return RedisCartWriter(redis.Redis()), PostgresCartWriter("postgresql://nowhere/none")


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 4), st.booleans()), max_size=40),
       cuts=st.lists(st.integers(0, 40), max_size=4), shuffle=st.randoms())
def test_coalesced_batches_leave_the_stores_as_writing_every_record_in_turn(
        steps: list[tuple[int, bool]], cuts: list[int], shuffle: Any) -> None:
    """Any batching of any delivery order (a re-delivered batch, another partition's records in
    between): what each sink keeps of a batch leaves the guarded stores where writing every
    record one by one does. Orders are not lost to a later cart of the same customer."""
    carts = history(steps)
    msgs = [FakeMessage(encode_cart_details(c), c.customer_id.encode(), i)
            for i, c in enumerate(carts)]
    shuffle.shuffle(msgs)
    redis_writer, pg_writer = writers()
    bounds = sorted({0, len(msgs), *[c for c in cuts if c < len(msgs)]})
    one_by_one = stores_after(parse_carts(msgs)[0])
    kept: dict[str, list[CartItem]] = {"redis": [], "postgres": []}
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        kept["redis"] += redis_writer.prepare(msgs[lo:hi]).items
        kept["postgres"] += pg_writer.prepare(msgs[lo:hi]).items
    coalesced = stores_after(kept["postgres"])
    assert coalesced["customers"] == one_by_one["customers"]
    assert coalesced["carts"] == one_by_one["carts"]
    assert stores_after(kept["redis"])["redis"] == one_by_one["redis"]
    orders = {c.cart_id for c in carts if c.status == "CHECKED_OUT"}
    assert orders <= set(coalesced["carts"])


def test_a_checkout_keeps_its_order_row_beside_the_next_cart_in_one_batch() -> None:
    carts = history([(1, False), (1, True), (1, False), (1, False)])
    msgs = [FakeMessage(encode_cart_details(c), b"c1", i) for i, c in enumerate(carts)]
    _, pg_writer = writers()
    kept = {(i.cart.cart_id, i.cart.customer_version) for i in pg_writer.prepare(msgs).items}
    assert kept == {("c1:1", 2), ("c1:2", 4)}


def test_coverage_ticks_each_offset_once_within_the_range() -> None:
    cov = Coverage({0: (10, 13), 1: (0, 2), 2: (5, 5)})
    assert (cov.total, cov.covered, cov.done) == (5, 0, False)
    cov.note([(0, 10), (0, 10), (0, 9), (0, 13), (1, 0), (3, 0), (2, 5)])
    assert (cov.covered, cov.left) == (2, 3)  # repeats, out of range, unknown partitions: none
    cov.note([(0, 11), (0, 12), (1, 1)])
    assert cov.done and cov.covered == 5
    assert Coverage({0: (4, 4)}).done  # an empty log is covered at once


def test_coverage_follows_the_records_customer_event() -> None:
    cov = Coverage({0: (0, 100)})
    items = parse_carts([FakeMessage(encode_cart_details(cart("a", v)), b"a", v)
                         for v in (1, 2, 3)])[0]
    cov.note_items(items)
    # tests.support.connectors.cart puts version v at partition 0, offset 10 * v.
    assert cov.covered == 3 and all(cov.seen[0][o] for o in (10, 20, 30))


def test_the_cart_sinks_decode_once_and_report_poison_once() -> None:
    redis_writer, pg_writer = writers()
    sinks = CartSinks({"redis": redis_writer, "postgres": pg_writer})
    seen: list[int] = []
    sinks.observe = lambda items: seen.append(len(items))
    try:
        carts = history([(1, False), (1, True), (1, False), (2, False)])
        msgs = [FakeMessage(encode_cart_details(c), c.customer_id.encode(), i)
                for i, c in enumerate(carts)] + [FakeMessage(b"not json", b"x", 9)]
        prepared = sinks.prepare(msgs)
        assert seen == [4]  # one decode, observed once
        (w1, p1), (w2, p2) = prepared
        assert (w1, w2) == (redis_writer, pg_writer)
        assert isinstance(p1, Prepared) and isinstance(p2, Prepared)
        assert len(p1.poison) == 1 and p2.poison == []
        assert sorted((i.cart.customer_id, i.cart.customer_version) for i in p1.items) == [
            ("c1", 3), ("c2", 1)]
        assert sorted((i.cart.cart_id, i.cart.customer_version) for i in p2.items) == [
            ("c1:1", 2), ("c1:2", 3), ("c2:1", 1)]
    finally:
        sinks.close()
