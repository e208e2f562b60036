"""The shared contract: strict types, tolerant of unknown fields, exact money."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cart_contract import (
    CART_DETAILS,
    CART_EVENTS,
    DEAD_LETTER,
    PRICE_MAX,
    PRODUCT_DETAILS,
    CartDetails,
    ContractError,
    EventPosition,
    EventType,
    LineItem,
    Product,
    Rejection,
    cart_details_to_dict,
    cart_event_to_dict,
    dead_letter_from_error,
    decode_cart_details,
    decode_cart_event,
    decode_dead_letter,
    decode_product,
    encode_cart_details,
    encode_cart_event,
    encode_dead_letter,
    encode_product,
    money,
    new_cart_event,
    parse_id,
    parse_qty,
    product_from_dict,
    utc_now_iso,
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
        (event_json(customerId=True), "WRONG_TYPE"),
        (event_json(itemId=None), "MISSING_FIELD"),
        (event_json(itemId="a b"), "INVALID_ID"),
        (event_json(qty=2.0), "WRONG_TYPE"),
        (event_json(qty=0), "INVALID_QTY"),
        (event_json(type=7), "WRONG_TYPE"),
        (event_json(type=...), "MISSING_FIELD"),
        (event_json(eventId=...), "MISSING_FIELD"),
        (event_json(eventId=5), "WRONG_TYPE"),
        (event_json(occurredAt=...), "MISSING_FIELD"),
        (event_json(occurredAt=1700000000), "WRONG_TYPE"),
        (event_json(schemaVersion=0), "WRONG_TYPE"),
        (event_json(schemaVersion="1"), "WRONG_TYPE"),
        (event_json(schemaVersion=True), "WRONG_TYPE"),
        (event_json(type="ITEM_REMOVED", qty=-3), "INVALID_QTY"),
    ],
)
def test_bad_events_raise_one_error_type(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        decode_cart_event(raw)
    assert err.value.reason == reason


def test_remove_without_qty_means_whole_line() -> None:
    assert decode_cart_event(event_json(type="ITEM_REMOVED", qty=...)).qty is None


@given(
    st.sampled_from(list(EventType)), ids, ids, st.one_of(st.none(), st.integers(1, 10000)),
    st.uuids(), st.datetimes(timezones=st.just(UTC)), st.integers(1, 99),
)
def test_cart_event_round_trip(etype: EventType, cid: str, item: str, qty: int | None, eid,
                               when: datetime, version: int) -> None:
    with_item = etype in (EventType.ITEM_ADDED, EventType.ITEM_REMOVED)
    if etype is EventType.ITEM_ADDED:
        qty = qty or 1
    ev = new_cart_event(etype, cid, item if with_item else None, qty if with_item else None,
                        event_id=str(eid), occurred_at=when.isoformat())
    ev = replace(ev, schema_version=version)
    assert decode_cart_event(encode_cart_event(ev)) == ev
    assert decode_cart_event(encode_cart_event(ev).decode()) == ev


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


def test_contract_error_is_a_value_error_with_a_readable_message() -> None:
    err = ContractError("INVALID_QTY", "qty must be between 1 and 10000", "qty")
    assert isinstance(err, ValueError)
    assert (err.reason, err.field, err.message) == ("INVALID_QTY", "qty", err.message)
    assert str(err) == "INVALID_QTY: qty must be between 1 and 10000 (field qty)"
    assert str(ContractError("INVALID_JSON", "not valid JSON")) == "INVALID_JSON: not valid JSON"


def test_missing_schema_version_means_one() -> None:
    assert decode_cart_event(event_json(schemaVersion=...)).schema_version == 1


def test_event_id_is_kept_as_canonical_lowercase_uuid() -> None:
    ev = decode_cart_event(event_json(eventId=EID.upper()))
    assert ev.event_id == EID
    ev = decode_cart_event(event_json(eventId=EID.replace("-", "")))
    assert ev.event_id == EID


def test_occurred_at_accepts_any_iso_8601_and_keeps_it_as_given() -> None:
    for ts in ["2026-11-22T10:00:00Z", "2026-11-22T10:00:00.123456+00:00", "2026-11-22"]:
        assert decode_cart_event(event_json(occurredAt=ts)).occurred_at == ts


@pytest.mark.parametrize("etype", ["CHECKOUT", "CART_CLEARED", "CLEAR_CART"])
def test_cart_wide_events_ignore_item_and_qty(etype: str) -> None:
    ev = decode_cart_event(event_json(type=etype, itemId="not valid!", qty="x"))
    assert (ev.item_id, ev.qty) == (None, None)
    assert set(cart_event_to_dict(ev)) == {
        "schemaVersion", "eventId", "type", "customerId", "occurredAt"}


def test_wire_form_is_camel_case_and_omits_absent_fields() -> None:
    ev = new_cart_event(EventType.ITEM_REMOVED, "123", "1", event_id=EID,
                        occurred_at="2026-11-22T10:00:00.123456Z")
    assert orjson.loads(encode_cart_event(ev)) == {
        "schemaVersion": 1, "eventId": EID, "type": "ITEM_REMOVED", "customerId": "123",
        "itemId": "1", "occurredAt": "2026-11-22T10:00:00.123456Z"}


def test_new_cart_event_fills_id_and_time_and_validates() -> None:
    ev = new_cart_event(EventType.ITEM_ADDED, "123", "1", 2)
    assert str(uuid.UUID(ev.event_id)) == ev.event_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ev.occurred_at)
    assert new_cart_event(EventType.CHECKOUT, "123", "1", 2).item_id is None
    with pytest.raises(ContractError):
        new_cart_event(EventType.ITEM_ADDED, "123", "1", 0)
    with pytest.raises(ContractError):
        new_cart_event(EventType.ITEM_ADDED, "bad id", "1", 1)
    with pytest.raises(ContractError):
        new_cart_event(EventType.ITEM_ADDED, "123", None, 1)


def test_utc_now_iso_is_parseable_utc() -> None:
    assert datetime.fromisoformat(utc_now_iso()).utcoffset() == UTC.utcoffset(None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [('"productName":"","price":"1","stockQty":1', "WRONG_TYPE"),
     ('"productName":"' + "n" * 201 + '","price":"1","stockQty":1', "WRONG_TYPE"),
     ('"productName":7,"price":"1","stockQty":1', "WRONG_TYPE"),
     ('"productName":"x","price":"1","stockQty":-1', "WRONG_TYPE"),
     ('"productName":"x","price":"1","stockQty":"5"', "WRONG_TYPE"),
     ('"productName":"x","price":true,"stockQty":1', "INVALID_PRICE"),
     ('"productName":"x","price":"Infinity","stockQty":1', "INVALID_PRICE"),
     ('"productName":"x","price":-0.01,"stockQty":1', "INVALID_PRICE"),
     ('"productName":"x","price":"1000000000.01","stockQty":1', "INVALID_PRICE"),
     ('"productName":"x","price":NaN,"stockQty":1', "INVALID_PRICE"),
     ('"productName":"x","stockQty":1', "MISSING_FIELD")],
)
def test_more_bad_products(body: str, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        decode_product(None, f'{{"productId":"1",{body}}}'.encode())
    assert err.value.reason == reason


@pytest.mark.parametrize(("raw", "reason"), [(b"{", "INVALID_JSON"), (b'"x"', "NOT_AN_OBJECT"),
                                             (b"\xff", "INVALID_JSON")])
def test_unparseable_products(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        decode_product(b"1", raw)
    assert err.value.reason == reason


def test_product_edges() -> None:
    body = '{"productId":"7","productName":"%s","price":%s,"stockQty":0,"colour":"red"}'
    p = decode_product("7", body % ("n" * 200, '"1000000000"'))
    assert p == Product("7", "n" * 200, PRICE_MAX, 0)
    zero = decode_product(None, body % ("x", '"-0.00"'))
    assert zero is not None and str(zero.price) == "0.00"
    numeric_id = decode_product(b"7", b'{"productId":7,"productName":"x","price":1,"stockQty":1}')
    assert numeric_id is not None and numeric_id.product_id == "7"
    with pytest.raises(ContractError) as err:
        decode_product(b"\xff", body % ("x", "1"))
    assert err.value.reason == "INVALID_ID"


def test_product_schema_version_carried_and_price_written_as_string() -> None:
    p = decode_product(b"1", b'{"productId":"1","productName":"x","price":649.99,"stockQty":1,'
                             b'"schemaVersion":2}')
    assert p is not None and p.schema_version == 2
    assert orjson.loads(encode_product(p)) == {
        "productId": "1", "productName": "x", "price": "649.99", "stockQty": 1,
        "schemaVersion": 2}


def test_product_from_dict_refuses_floats() -> None:
    # A float has already lost the typed digits; decode_product parses numbers exactly.
    with pytest.raises(ContractError) as err:
        product_from_dict({"productId": "1", "productName": "x", "price": 0.1, "stockQty": 1})
    assert err.value.reason == "INVALID_PRICE"


@pytest.mark.parametrize(("amount", "expected"),
                         [("0.125", "0.12"), ("0.135", "0.14"), ("65000", "65000.00"),
                          ("1E+3", "1000.00"), ("0.005", "0.00")])
def test_money_rounds_half_even_to_cents(amount: str, expected: str) -> None:
    assert str(money(Decimal(amount))) == expected


def sample_details() -> CartDetails:
    return CartDetails("123", "123:2", "OPEN",
                       (LineItem("1", "IPhone 12", 3, Decimal("65000"), Decimal("195000")),),
                       3, Decimal("195000"), 7, EventPosition(EID, 5, 4),
                       (Rejection(EID, "CHECKOUT", None, "EMPTY_CART"),), "2026-11-22T10:00:00Z")


def test_cart_details_wire_form() -> None:
    assert orjson.loads(encode_cart_details(sample_details())) == {
        "customerId": "123", "cartId": "123:2", "status": "OPEN",
        "lineItems": [{"itemId": "1", "itemName": "IPhone 12", "qty": 3,
                       "unitPrice": "65000.00", "totalPrice": "195000.00"}],
        "totalQty": 3, "totalPrice": "195000.00", "version": 7,
        "lastEvent": {"eventId": EID, "partition": 5, "offset": 4},
        "rejected": [{"eventId": EID, "type": "CHECKOUT", "itemId": None,
                      "reason": "EMPTY_CART"}],
        "updatedAt": "2026-11-22T10:00:00Z", "schemaVersion": 1}


@pytest.mark.parametrize(
    ("change", "field"),
    [({"status": "LOST"}, "status"), ({"cartId": "999:1"}, "cartId"),
     ({"cartId": "123"}, "cartId"), ({"cartId": "123:x"}, "cartId"),
     ({"totalPrice": 195000}, "totalPrice"), ({"totalPrice": "lots"}, "totalPrice"),
     ({"version": "7"}, "version"), ({"lastEvent": [1]}, "lastEvent"),
     ({"lineItems": {}}, "lineItems"), ({"lineItems": [{"itemId": "1"}]}, "itemName"),
     ({"rejected": [{}]}, "eventId"), ({"customerId": None}, "customerId")],
)
def test_bad_cart_details_raise_contract_errors(change: dict, field: str) -> None:
    d = cart_details_to_dict(sample_details())
    d.update(change)
    with pytest.raises(ContractError) as err:
        decode_cart_details(orjson.dumps(d))
    assert err.value.field == field


def test_cart_details_reader_is_tolerant() -> None:
    d = cart_details_to_dict(sample_details())
    del d["rejected"], d["schemaVersion"]
    d["somethingNew"] = {"x": 1}
    back = decode_cart_details(orjson.dumps(d))
    assert back.rejected == () and back.schema_version == 1 and back.generation == 2


def test_dead_letter_from_any_exception_and_readable_text() -> None:
    value = ("é" * 5000).encode() + b"\xff"
    dl = dead_letter_from_error(KeyError("x"), source_topic="", partition=0, offset=-1,
                                key=None, value=value, stage="sink")
    d = orjson.loads(encode_dead_letter(dl))
    assert (d["reason"], d["keyB64"], d["stage"]) == ("KeyError", None, "sink")
    assert d["valueText"] == "é" * 4096
    assert decode_dead_letter(encode_dead_letter(dl)) == dl
    tail = dead_letter_from_error(ValueError("no"), source_topic="t", partition=0, offset=0,
                                  key=b"k", value=b"ab\xff", stage="s")
    assert orjson.loads(encode_dead_letter(tail))["valueText"] == "ab\ufffd"


@pytest.mark.parametrize("change", [{"keyB64": "%%%"}, {"offset": "1"}, {"reason": None}])
def test_bad_dead_letters_raise_contract_errors(change: dict) -> None:
    dl = dead_letter_from_error(ValueError("no"), source_topic="t", partition=0, offset=0,
                                key=b"k", value=None, stage="s")
    d = orjson.loads(encode_dead_letter(dl))
    d.update(change)
    with pytest.raises(ContractError):
        decode_dead_letter(orjson.dumps(d))


def test_topic_defaults() -> None:
    assert (CART_EVENTS, PRODUCT_DETAILS, CART_DETAILS, DEAD_LETTER) == (
        "cart-events", "product-details-events", "cart-details-event", "cartstream-dead-letter")


# Values a record's fields may hold: valid ones, and every wrong type and edge the checks know.
_field_values = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 10_002), st.floats(allow_nan=False),
    st.sampled_from(["ITEM_ADDED", "ITEM_REMOVED", "CHECKOUT", "CART_CLEARED", "ADD_ITEM",
                     "REMOVE_ITEM", "CLEAR_CART", "TELEPORT", EID, EID.upper(), "123",
                     "a b", "2026-11-22T10:00:00Z", '2026-11-22"10:00', "2026-13-40", ""]),
    st.lists(st.integers(), max_size=1), st.dictionaries(st.text(max_size=1), st.none(),
                                                         max_size=1),
)


@given(st.dictionaries(st.sampled_from(["type", "eventType", "eventId", "customerId", "itemId",
                                        "qty", "occurredAt", "schemaVersion"]), _field_values))
def test_the_fast_reader_agrees_with_the_checked_one(over: dict) -> None:
    from cart_contract.events import _checked_fields, cart_event_fields

    d = {"eventId": EID, "type": "ITEM_ADDED", "customerId": "123", "itemId": "1", "qty": 2,
         "occurredAt": "2026-11-22T10:00:00Z", **over}
    try:
        expected = _checked_fields(d)
    except ContractError as exc:
        with pytest.raises(ContractError) as got:
            cart_event_fields(d)
        assert (got.value.reason, got.value.field) == (exc.reason, exc.field)
        return
    fields = cart_event_fields(d)
    assert fields == expected and [type(f) for f in fields] == [type(f) for f in expected]
