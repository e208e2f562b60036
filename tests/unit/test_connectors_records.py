"""Connectors: decoding records into sink items, refusing poison, keeping the newest."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cart_contract import ContractError, Product, encode_cart_details, encode_product
from connectors.records import newest, parse_carts, parse_products
from tests.support.connectors import FakeMessage, cart


def test_a_valid_record_keeps_its_own_bytes_as_the_document() -> None:
    raw = encode_cart_details(cart("c1", 3))
    items, poison = parse_carts([FakeMessage(raw, b"c1")])
    assert poison == [] and len(items) == 1
    assert items[0].doc is raw and items[0].cart == cart("c1", 3)


def test_poison_is_refused_with_its_reason_and_the_rest_goes_on() -> None:
    good = FakeMessage(encode_cart_details(cart("c1", 1)), b"c1", 0)
    msgs = [FakeMessage(b"{not json", b"x", 1), good,
            FakeMessage(None, b"c2", 2),
            FakeMessage(b'{"customerId":"c3"}', b"c3", 3),
            FakeMessage(b"[1,2]", b"c4", 4)]
    items, poison = parse_carts(msgs)
    assert [i.message for i in items] == [good]
    reasons = {p.message.offset(): p.error.reason for p in poison}
    assert reasons == {1: "INVALID_JSON", 2: "TOMBSTONE", 3: "MISSING_FIELD", 4: "NOT_AN_OBJECT"}
    assert all(isinstance(p.error, ContractError) for p in poison)


@given(st.permutations(list(range(1, 9))), st.lists(st.integers(1, 8), max_size=5))
def test_newest_keeps_the_highest_version_per_customer_in_any_order(order, dups) -> None:
    versions = [*order, *dups]
    carts = [cart("a", v) for v in versions] + [cart("b", v) for v in reversed(versions)]
    kept = sorted(newest(carts, lambda c: c.customer_id, lambda c: c.version),
                  key=lambda c: c.customer_id)
    assert [(c.customer_id, c.version) for c in kept] == [("a", 8), ("b", 8)]


def test_newest_per_cart_keeps_every_generation() -> None:
    carts = [cart("a", 1), cart("a", 2, checked_out=True), cart("a", 3, generation=2)]
    kept = newest(carts, lambda c: c.cart_id, lambda c: c.version)
    assert sorted((c.cart_id, c.version) for c in kept) == [("a:1", 2), ("a:2", 3)]
    assert newest([], str, len) == []


def product_msg(pid: str, offset: int, name: str = "P", key: bytes | None = None) -> FakeMessage:
    from decimal import Decimal

    value = encode_product(Product(pid, name, Decimal("9.99"), 3))
    return FakeMessage(value, pid.encode() if key is None else key, offset)


def test_products_latest_offset_wins_and_tombstones_are_items() -> None:
    msgs = [product_msg("1", 4, "new"), product_msg("1", 2, "old"), product_msg("2", 1),
            FakeMessage(None, b"2", 7), FakeMessage(b"", b"3", 8)]
    items, poison = parse_products(msgs)
    assert poison == []
    got = {i.product_id: (i.offset, i.product and i.product.product_name) for i in items}
    assert got == {"1": (4, "new"), "2": (7, None), "3": (8, None)}


def test_product_poison() -> None:
    msgs = [product_msg("1", 0, key=b"2"),         # key differs from productId
            FakeMessage(None, None, 1),             # tombstone without a key
            FakeMessage(None, b"bad id!", 2),       # tombstone with an invalid key
            FakeMessage(b'{"productId":"4","productName":"x","price":"-1","stockQty":1}',
                        b"4", 3)]
    items, poison = parse_products(msgs)
    assert items == []
    assert [p.error.reason for p in poison] == ["KEY_MISMATCH", "MISSING_FIELD", "INVALID_ID",
                                                "INVALID_PRICE"]
