"""The money and size limits (cart_contract.limits): exact totals, and a record that fits."""

from __future__ import annotations

from decimal import Decimal

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from cart_aggregator.fold import REJECTIONS_KEPT, LineCache, apply, encode_state
from cart_aggregator.join import product_tuple
from cart_contract import Product, decode_cart_details
from cart_contract.limits import (
    AMOUNT_INT_DIGITS,
    CART_TOTAL_MAX,
    LINE_QTY_MAX,
    LINES_MAX,
    MESSAGE_BYTES_MAX,
    MONEY_INT_DIGITS,
    MONEY_SQL,
    NAME_MAX,
    PRICE_MAX,
    RECORD_BYTES_MAX,
    price_error,
)

EID = "00000000-0000-4000-8000-{:012d}"
# The worst name for JSON: every character escaped as \u00XX (6 bytes each).
WORST_NAME = "\x01" * NAME_MAX
ID = "x" * 64


def test_the_bounds_follow_from_each_other() -> None:
    assert CART_TOTAL_MAX == PRICE_MAX * LINE_QTY_MAX * LINES_MAX == Decimal("2E+15")
    assert len(str(int(CART_TOTAL_MAX))) == AMOUNT_INT_DIGITS <= MONEY_INT_DIGITS
    assert MONEY_SQL == f"numeric({MONEY_INT_DIGITS + 2}, 2)"


@given(st.decimals(allow_nan=True, allow_infinity=True, places=None))
def test_a_price_is_valid_exactly_in_range_with_two_decimals(price: Decimal) -> None:
    valid = (price.is_finite() and 0 <= price <= PRICE_MAX
             and price == price.quantize(Decimal("0.01")))
    assert (price_error(price) is None) == valid


def _largest_state() -> bytes:
    """The longest record: LINES_MAX full lines of the longest ids and names, every
    rejection kept (in the cart and the customer), the longest customer id."""
    cache, state = LineCache(), None
    for i in range(LINES_MAX):
        item = f"{i:03d}" + ID[3:]
        p = product_tuple(Product(item, WORST_NAME, PRICE_MAX, 2**31 - 1))
        w = (EID.format(i), "ITEM_ADDED", ID, item, LINE_QTY_MAX, "2026-11-22T10:00:00.000000Z",
             2**31 - 1, 2**62 + i, None)
        state, _ = apply(state, w, p, cache)
    for j in range(REJECTIONS_KEPT):
        w = (EID.format(1000 + j), "ITEM_REMOVED", ID, "y" * 64, None,
             "2026-11-22T10:00:00.000000Z", 2**31 - 1, 2**62 + 1000 + j, 2**62)
        state, _ = apply(state, w, None, cache)
    assert state is not None
    return encode_state(state)


def test_the_largest_record_fits_the_topic() -> None:
    raw = _largest_state()
    cart = decode_cart_details(raw)
    assert len(cart.line_items) == LINES_MAX and cart.total_price == CART_TOTAL_MAX
    assert cart.customer is not None and len(cart.rejected) == len(cart.customer.rejected) == 10
    assert {r.reason for r in cart.rejected} == {"VERSION_CONFLICT"}
    # Measured: 277,182 bytes, most of it the escaped names (200 x 1,200 bytes).
    assert len(raw) <= RECORD_BYTES_MAX < MESSAGE_BYTES_MAX
    assert orjson.loads(raw)["totalPrice"] == "2000000000000000.00"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(
    st.integers(0, 4),  # product
    st.integers(1, LINE_QTY_MAX),
    st.decimals(min_value=0, max_value=PRICE_MAX, places=2, allow_nan=False)), max_size=40))
def test_line_totals_sum_to_the_cart_total_exactly(adds: list) -> None:
    cache, state = LineCache(), None
    for n, (pid, qty, price) in enumerate(adds):
        p = product_tuple(Product(str(pid), "P", price, 10**6))
        w = (EID.format(n), "ITEM_ADDED", "c", str(pid), qty, "2026-11-22", 0, n, None)
        state, _ = apply(state, w, p, cache)
        cart = decode_cart_details(encode_state(state))
        for li in cart.line_items:
            assert li.total_price == li.unit_price * li.qty and li.qty <= LINE_QTY_MAX
        assert sum((li.total_price for li in cart.line_items), Decimal(0)) == cart.total_price
        assert cart.total_price <= CART_TOTAL_MAX


def test_the_postgresql_money_columns_are_money_sql() -> None:
    from pathlib import Path

    sql = (Path(__file__).resolve().parents[2] / "connectors" / "migrations"
           / "0003_money_range_customers.sql").read_text()
    for column in ("carts ALTER COLUMN total_price", "cart_lines ALTER COLUMN unit_price",
                   "cart_lines ALTER COLUMN total_price", "products ALTER COLUMN price"):
        assert f"{column} TYPE {MONEY_SQL};" in sql, column
