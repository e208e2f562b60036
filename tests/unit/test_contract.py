"""The shared contract: strict types, tolerant of unknown fields, exact money."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cart_contract import (
    CartDetails,
    ContractError,
    EventPosition,
    EventType,
    LineItem,
    Product,
    Rejection,
    dead_letter_from_error,
    decode_cart_details,
    decode_cart_event,
    decode_dead_letter,
    decode_product,
    encode_cart_details,
    encode_cart_event,
    encode_dead_letter,
    encode_product,
    new_cart_event,
    parse_id,
    parse_qty,
)

EID = "8f14e45f-ceea-467a-9e3c-7e0e0b0f2b1a"
ids = st.from_regex(r"\A[A-Za-z0-9._:@-]{1,64}\Z")


def event_json(**over: object) -> bytes:
    d = {"eventId": EID, "type": "ITEM_ADDED", "customerId": "123", "itemId": "1", "qty": 2,
         "occurredAt": "2026-11-22T10:00:00.000000Z", "schemaVersion": 1}
    d.update(over)
    return orjson.dumps({k: v for k, v in d.items() if v is not ...})


@pytest.mark.parametrize("value", ["", "x" * 65, "a b", "é", "a/b", "a;DROP"])
def test_bad_ids_are_refused(value: str) -> None:
    with pytest.raises(ContractError) as err:
        parse_id(value, "customerId")
    assert (err.value.reason, err.value.field) == ("INVALID_ID", "customerId")


@pytest.mark.parametrize("value", [True, 1.5, None, ["1"], {"a": 1}])
def test_non_string_ids_are_refused(value: object) -> None:
    with pytest.raises(ContractError) as err:
        parse_id(value, "itemId")
    assert err.value.reason == "WRONG_TYPE"


def test_numeric_ids_become_strings() -> None:
    assert parse_id(123, "customerId") == "123"
    assert parse_id("a.b:c@d-e_f", "x") == "a.b:c@d-e_f"
    assert parse_id("x" * 64, "x") == "x" * 64


@pytest.mark.parametrize(
    ("value", "reason"),
    [(True, "WRONG_TYPE"), (1.0, "WRONG_TYPE"), ("2", "WRONG_TYPE"), (0, "INVALID_QTY"),
     (10001, "INVALID_QTY"), (-1, "INVALID_QTY")],
)
def test_bad_quantities_are_refused(value: object, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        parse_qty(value)
    assert err.value.reason == reason


def test_quantity_bounds_are_inclusive() -> None:
    assert (parse_qty(1), parse_qty(10000)) == (1, 10000)


def test_legacy_names_and_event_type_alias_parse() -> None:
    raw = orjson.dumps({"eventId": EID, "eventType": "ADD_ITEM", "customerId": 123, "itemId": 1,
                        "qty": 1, "occurredAt": "2026-01-01T00:00:00Z"})
    ev = decode_cart_event(raw)
    assert (ev.type, ev.customer_id, ev.item_id) == (EventType.ITEM_ADDED, "123", "1")
    assert decode_cart_event(event_json(type="REMOVE_ITEM", qty=...)).type is EventType.ITEM_REMOVED
    assert decode_cart_event(event_json(type="CLEAR_CART")).type is EventType.CART_CLEARED


def test_unknown_fields_ignored_and_schema_version_carried() -> None:
    ev = decode_cart_event(event_json(schemaVersion=3, somethingNew={"x": 1}))
    assert ev.schema_version == 3
    assert orjson.loads(encode_cart_event(ev))["schemaVersion"] == 3


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "INVALID_JSON"),
        (b"[1]", "NOT_AN_OBJECT"),
        (event_json(type="TELEPORT"), "UNKNOWN_EVENT_TYPE"),
        (event_json(qty="2"), "WRONG_TYPE"),
        (event_json(qty=...), "MISSING_FIELD"),
        (event_json(itemId=...), "MISSING_FIELD"),
        (event_json(eventId="nope"), "INVALID_ID"),
        (event_json(occurredAt="yesterday"), "WRONG_TYPE"),
        (event_json(customerId=""), "INVALID_ID"),
    ],
)
def test_bad_events_raise_one_error_type(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        decode_cart_event(raw)
    assert err.value.reason == reason


def test_remove_without_qty_means_whole_line() -> None:
    assert decode_cart_event(event_json(type="ITEM_REMOVED", qty=...)).qty is None


@given(
    st.sampled_from(list(EventType)), ids, ids, st.integers(1, 10000), st.uuids(),
)
def test_cart_event_round_trip(etype: EventType, cid: str, item: str, qty: int, eid) -> None:
    with_item = etype in (EventType.ITEM_ADDED, EventType.ITEM_REMOVED)
    ev = new_cart_event(etype, cid, item if with_item else None, qty if with_item else None,
                        event_id=str(eid))
    assert decode_cart_event(encode_cart_event(ev)) == ev


@pytest.mark.parametrize(
    ("price", "expected"),
    [('"65000"', Decimal("65000")), ("65000", Decimal("65000")), ("649.99", Decimal("649.99")),
     ("0.1", Decimal("0.1"))],
)
def test_prices_parse_exactly(price: str, expected: Decimal) -> None:
    raw = f'{{"productId":"1","productName":"IPhone 12","price":{price},"stockQty":768}}'
    p = decode_product(b"1", raw.encode())
    assert p is not None and p.price == expected and str(p.price) == str(expected)


def test_seed_product_line_parses() -> None:
    raw = b'{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}'
    assert decode_product(b"1", raw) == Product("1", "IPhone 12", Decimal("65000"), 768)


def test_tombstone_and_key_mismatch() -> None:
    assert decode_product(b"1", None) is None
    assert decode_product(b"1", b"") is None
    with pytest.raises(ContractError) as err:
        decode_product(b"2", b'{"productId":"1","productName":"x","price":"1","stockQty":1}')
    assert err.value.reason == "KEY_MISMATCH"


@pytest.mark.parametrize(
    ("body", "reason"),
    [('"price":"abc","stockQty":1', "INVALID_PRICE"),
     ('"price":"-1","stockQty":1', "INVALID_PRICE"),
     ('"price":"1","stockQty":1.5', "WRONG_TYPE"), ('"price":"1","stockQty":true', "WRONG_TYPE"),
     ('"price":"NaN","stockQty":1', "INVALID_PRICE"), ('"stockQty":1', "MISSING_FIELD")],
)
def test_bad_products(body: str, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        decode_product(None, f'{{"productId":"1","productName":"x",{body}}}'.encode())
    assert err.value.reason == reason


@given(ids, st.text(min_size=1, max_size=200),
       st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False),
       st.integers(0, 10**6))
def test_product_round_trip(pid: str, name: str, price: Decimal, stock: int) -> None:
    p = Product(pid, name, price, stock)
    assert decode_product(pid.encode(), encode_product(p)) == p


money_st = st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False)


@given(
    ids,
    st.lists(st.tuples(ids, st.integers(1, 10000), money_st), max_size=5, unique_by=lambda t: t[0]),
    st.integers(1, 10**9), st.integers(0, 100), st.integers(0, 10**12),
    st.sampled_from(["OPEN", "CHECKED_OUT"]),
)
def test_cart_details_round_trip(cid, lines, version, partition, offset, status) -> None:
    items = tuple(LineItem(i, f"name {i}", q, p, p * q) for i, q, p in lines)
    c = CartDetails(
        customer_id=cid, cart_id=f"{cid}:3", status=status, line_items=items,
        total_qty=sum(li.qty for li in items), total_price=sum((li.total_price for li in items),
                                                               Decimal(0)),
        version=version, last_event=EventPosition(EID, partition, offset),
        rejected=(Rejection(EID, "ITEM_ADDED", "9", "UNKNOWN_PRODUCT"),),
        updated_at="2026-11-22T10:00:00Z",
    )
    back = decode_cart_details(encode_cart_details(c))
    assert back == c
    assert back.generation == 3


def test_cart_details_money_has_two_decimals() -> None:
    c = CartDetails("1", "1:1", "OPEN", (LineItem("1", "x", 3, Decimal("65000"),
                                                  Decimal("195000")),),
                    3, Decimal("195000"), 4, EventPosition(EID, 0, 7), (), "t")
    d = orjson.loads(encode_cart_details(c))
    assert d["totalPrice"] == "195000.00"
    assert d["lineItems"][0]["unitPrice"] == "65000.00"


def test_dead_letter_keeps_original_bytes() -> None:
    try:
        decode_cart_event(b"\xff\xfe garbage")
    except ContractError as exc:
        dl = dead_letter_from_error(exc, source_topic="cart-events", partition=2, offset=9,
                                    key=b"123", value=b"\xff\xfe garbage", stage="parse")
    back = decode_dead_letter(encode_dead_letter(dl))
    assert back == dl
    assert back.reason == "INVALID_JSON" and back.value == b"\xff\xfe garbage"
