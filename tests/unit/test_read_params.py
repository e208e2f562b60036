"""Read API parameter parsing and cursors (pure, no I/O)."""

from __future__ import annotations

import base64
from decimal import Decimal

import orjson
import pytest
from werkzeug.datastructures import MultiDict

from cart_read.config import Config
from cart_read.errors import ApiError
from cart_read.params import (
    KIND_CARTS_BY_ID,
    KIND_CARTS_BY_TOTAL,
    KIND_ORDERS,
    KIND_PRODUCTS,
    cart_params,
    carts_params,
    decode_cursor,
    encode_cursor,
    orders_params,
    path_id,
    products_params,
)

CFG = Config(page_default=20, page_max=100, wait_default_ms=5000, wait_max_ms=30000)


def args(**kw: str | list[str]) -> MultiDict[str, str]:
    """A query string as Flask parses it."""
    items: list[tuple[str, str]] = []
    for k, v in kw.items():
        items.extend((k, x) for x in (v if isinstance(v, list) else [v]))
    return MultiDict(items)


def raises(fn, *a, code: str = "INVALID_PARAMETER", field: str | None = None) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*a)
    assert info.value.status == 400
    assert info.value.code == code
    if field is not None:
        assert info.value.field == field
    return info.value


# ----------------------------------------------------------------------------------- cursors


@pytest.mark.parametrize(
    ("kind", "key", "types"),
    [
        (KIND_ORDERS, [7], (int,)),
        (KIND_PRODUCTS, ["p-1:x@y"], (str,)),
        (KIND_CARTS_BY_ID, ["c1:3"], (str,)),
        (KIND_CARTS_BY_TOTAL, ["195000.00", "c1:3"], (str, str)),
    ],
)
def test_cursor_round_trips(kind: str, key: list, types: tuple) -> None:
    cursor = encode_cursor(kind, *key)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor, kind, types) == key


def test_absent_cursor_is_none() -> None:
    assert decode_cursor(None, KIND_ORDERS, (int,)) is None


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "not base64 at all",
        base64.urlsafe_b64encode(b"not json").decode(),
        _b64({"k": 1}),
        _b64(["p", "1"]),  # another listing's kind
        _b64(["o"]),  # no key
        _b64(["o", 1, 2]),  # too long
        _b64(["o", "1"]),  # wrong type
        _b64(["o", True]),  # bool is not an int
        "A" * 600,
    ],
)
def test_bad_cursors_are_400(cursor: str) -> None:
    err = raises(decode_cursor, cursor, KIND_ORDERS, (int,), code="INVALID_CURSOR")
    assert err.field == "cursor"


@pytest.mark.parametrize(("kind", "types", "key"), [
    (KIND_PRODUCTS, (str,), ["1\x00"]),  # PostgreSQL text cannot hold a NUL: was a 500
    (KIND_CARTS_BY_ID, (str,), ["\x00"]),
    (KIND_CARTS_BY_TOTAL, (str, str), ["1.00\x00", "c1"]),
    (KIND_CARTS_BY_TOTAL, (str, str), ["1.00", "a b"]),
    (KIND_PRODUCTS, (str,), [""]),
    (KIND_PRODUCTS, (str,), ["x" * 65]),
])
def test_crafted_text_in_a_cursor_is_400(kind: str, types: tuple, key: list) -> None:
    raises(decode_cursor, _b64([kind, *key]), kind, types, code="INVALID_CURSOR")


# ------------------------------------------------------------------------------------ ids


def test_path_ids_follow_the_contract() -> None:
    assert path_id("123", "customerId") == "123"
    assert path_id("a.b:c@d-e_f", "customerId") == "a.b:c@d-e_f"
    raises(path_id, "a b", "customerId", code="INVALID_ID", field="customerId")
    raises(path_id, "x" * 65, "productId", code="INVALID_ID", field="productId")


# ------------------------------------------------------------------------------ cart params


def test_plain_cart_read_has_no_wait() -> None:
    p = cart_params(args(), CFG)
    assert p.min_offset is None and p.timeout_s is None


def test_min_offset_defaults_and_caps_the_timeout() -> None:
    assert cart_params(args(minOffset="12"), CFG).timeout_s == 5.0
    assert cart_params(args(minOffset="12", timeout="250"), CFG).timeout_s == 0.25
    capped = cart_params(args(minOffset="0", timeout="999999"), CFG)
    assert capped.min_offset == 0 and capped.timeout_s == 30.0


@pytest.mark.parametrize("value", ["-1", "+5", " 5", "5_0", "1e3", "1.0", "", "x",
                                   str(2**63)])
def test_min_offset_must_be_a_plain_integer(value: str) -> None:
    raises(cart_params, args(minOffset=value), CFG, field="minOffset")


def test_min_offset_takes_a_read_token() -> None:
    p = cart_params(args(minOffset="5:12"), CFG)
    assert (p.min_partition, p.min_offset) == (5, 12)
    assert cart_params(args(minOffset="12"), CFG).min_partition is None


@pytest.mark.parametrize("value", [":5", "5:", "1:2:3", "-1:5", "5:-1", "a:5", "5: 1",
                                   f"{2**31}:1", f"1:{2**63}"])
def test_a_malformed_read_token_is_400(value: str) -> None:
    raises(cart_params, args(minOffset=value), CFG, field="minOffset")


def test_timeout_without_min_offset_is_refused() -> None:
    raises(cart_params, args(timeout="100"), CFG, field="timeout")


def test_unknown_and_repeated_parameters_are_refused() -> None:
    raises(cart_params, args(minoffset="1"), CFG, code="UNKNOWN_PARAMETER", field="minoffset")
    raises(cart_params, args(minOffset=["1", "2"]), CFG, field="minOffset")


# ----------------------------------------------------------------------------- page params


def test_page_limit_bounds_and_default() -> None:
    assert orders_params(args(), CFG).limit == 20
    assert products_params(args(limit="100"), CFG).limit == 100
    raises(orders_params, args(limit="0"), CFG, field="limit")
    raises(products_params, args(limit="101"), CFG, field="limit")
    raises(products_params, args(limit="ten"), CFG, field="limit")


def test_page_cursors_are_tied_to_their_listing() -> None:
    assert orders_params(args(cursor=encode_cursor(KIND_ORDERS, 4)), CFG).after == [4]
    raises(orders_params, args(cursor=encode_cursor(KIND_PRODUCTS, "4")), CFG,
           code="INVALID_CURSOR")
    assert products_params(args(cursor=encode_cursor(KIND_PRODUCTS, "9")), CFG).after == ["9"]


# ---------------------------------------------------------------------------- carts params


def test_carts_filters_parse() -> None:
    q = carts_params(args(status="CHECKED_OUT", minTotal="10", maxTotal="99.5", itemId="7"), CFG)
    assert (q.status, q.min_total, q.max_total, q.item_id) == (
        "CHECKED_OUT", Decimal("10"), Decimal("99.5"), "7")
    assert q.sort == "totalPrice"


def test_carts_default_order_is_cart_id_without_a_price_filter() -> None:
    q = carts_params(args(status="OPEN"), CFG)
    assert q.sort == "cartId" and q.cursor_kind == KIND_CARTS_BY_ID
    assert carts_params(args(maxTotal="5"), CFG).cursor_kind == KIND_CARTS_BY_TOTAL
    assert carts_params(args(minTotal="5", sort="cartId"), CFG).sort == "cartId"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "open"}, "status"),
        ({"status": "DELETED"}, "status"),
        ({"minTotal": "-1"}, "minTotal"),
        ({"minTotal": "1.001"}, "minTotal"),
        ({"maxTotal": "NaN"}, "maxTotal"),
        ({"maxTotal": "1e5"}, "maxTotal"),
        ({"minTotal": "10", "maxTotal": "9.99"}, "minTotal"),
        ({"sort": "price"}, "sort"),
        ({"limit": "1000"}, "limit"),
    ],
)
def test_bad_carts_parameters(query: dict[str, str], field: str) -> None:
    raises(carts_params, args(**query), CFG, field=field)


def test_bad_item_id_uses_the_contract_code() -> None:
    raises(carts_params, args(itemId="a/b"), CFG, code="INVALID_ID", field="itemId")


def test_carts_cursor_must_match_the_order() -> None:
    by_total = encode_cursor(KIND_CARTS_BY_TOTAL, "10.00", "c:1")
    by_id = encode_cursor(KIND_CARTS_BY_ID, "c:1")
    q = carts_params(args(minTotal="1", cursor=by_total), CFG)
    assert q.after == [Decimal("10.00"), "c:1"]
    assert carts_params(args(cursor=by_id), CFG).after == ["c:1"]
    raises(carts_params, args(cursor=by_total), CFG, code="INVALID_CURSOR")
    raises(carts_params, args(minTotal="1", cursor=by_id), CFG, code="INVALID_CURSOR")
    forged = encode_cursor(KIND_CARTS_BY_TOTAL, "1; DROP TABLE carts", "c:1")
    raises(carts_params, args(sort="totalPrice", cursor=forged), CFG, code="INVALID_CURSOR")
