"""The shared contract: strict types, tolerant of unknown fields, exact money."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
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
    decode_cart_event_fields,
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
from cart_contract import events as events_module
from cart_contract._json import load_object
from cart_contract.events import _checked_fields

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
                                        "qty", "occurredAt", "schemaVersion",
                                        "expectedVersion"]), _field_values))
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


# decode_cart_event_fields reads with msgspec and falls back to orjson + the general checks;
# for every input it must give what that general path alone gives.


def _reference(raw: Any) -> tuple:
    """The reader as it was before the msgspec path: orjson, then every check."""
    return _checked_fields(load_object(raw))


def _outcome(decode: Callable[[Any], tuple], raw: object) -> tuple:
    try:
        fields = decode(raw)
    except ContractError as exc:
        return ("error", exc.reason, exc.field)
    except Exception as exc:  # any other failure must match too
        return ("raised", type(exc).__name__)
    return ("ok", fields, [type(f) for f in fields])


def _assert_same_as_reference(raw: object) -> tuple:
    expected = _outcome(_reference, raw)
    assert _outcome(decode_cart_event_fields, raw) == expected
    return expected


_GOOD = (b'{"schemaVersion":1,"eventId":"cf7b1a76-0bf2-4696-b8bb-cc3d11cc7454","type":"ITEM_ADDED",'
         b'"customerId":"customer-145","itemId":"98","qty":1,'
         b'"occurredAt":"2026-12-01T04:50:05.915490Z"}')


def _with(extra: bytes) -> bytes:
    """_GOOD with more members appended (a later key overrides an earlier one)."""
    return _GOOD[:-1] + b"," + extra + b"}"


def _without(key: bytes) -> bytes:
    d = orjson.loads(_GOOD)
    del d[key.decode()]
    return orjson.dumps(d)


class _Bytes(bytes):
    pass


_EDGE_CASES = {
    "good": _GOOD,
    "good as str": _GOOD.decode(),
    "good as bytearray": bytearray(_GOOD),
    "good as memoryview": memoryview(_GOOD),
    "bytes subclass (orjson refuses it, msgspec does not)": _Bytes(_GOOD),
    "duplicate key, last wins": _with(b'"qty":7'),
    "duplicate key, last is null": _with(b'"qty":null'),
    "duplicate key, last is invalid": _with(b'"customerId":"a b"'),
    "duplicate key, first is null": _GOOD.replace(b'"qty":1', b'"qty":null,"qty":3'),
    "duplicate type": _with(b'"type":"CHECKOUT"'),
    "duplicate qty, first is 10**400": b'{"qty":1' + b"0" * 400 + b"," + _GOOD[1:],
    "duplicate qty, first is 2**64": b'{"qty":18446744073709551616,' + _GOOD[1:],
    "duplicate qty, first is 1e400": b'{"qty":1e400,' + _GOOD[1:],
    "duplicate schemaVersion, first is 10**400": b'{"schemaVersion":1' + b"0" * 400 + b","
                                                 + _GOOD[1:],
    "duplicate customerId, first is invalid UTF-8": b'{"customerId":"\xff",' + _GOOD[1:],
    "duplicate customerId, first is a lone surrogate": b'{"customerId":"\\ud800",' + _GOOD[1:],
    "escaped key": _GOOD.replace(b'"type"', b'"\\u0074ype"'),
    "eventType alias": _GOOD.replace(b'"type"', b'"eventType"'),
    "both type and eventType": _with(b'"eventType":"CHECKOUT"'),
    "lone surrogate in a known field": _GOOD.replace(b'"98"', b'"\\ud800"'),
    "lone low surrogate in a known field": _GOOD.replace(b'"98"', b'"\\udc00"'),
    "lone surrogate in occurredAt": _GOOD.replace(b"T04", b"\\ud80004"),
    "surrogate pair in occurredAt": _GOOD.replace(b"T04", b"\\ud83d\\ude0004"),
    "lone surrogate in an unknown field": _with(b'"x":"\\ud800"'),
    "lone surrogate in an unknown key": _with(b'"\\ud800":1'),
    "lone surrogate then more fields": _GOOD.replace(b"{", b'{"x":"\\ud800",', 1),
    "lone surrogate in a str input": _GOOD.decode().replace("98", "\ud800"),
    "invalid UTF-8 in a known field": _GOOD.replace(b"98", b"\xff"),
    "invalid UTF-8 in an unknown field": _with(b'"x":"\xff"'),
    "invalid UTF-8 in an unknown key": _with(b'"\xff":1'),
    "UTF-8 encoded surrogate": _with(b'"x":"\xed\xa0\x80"'),
    "non-ASCII in occurredAt": _GOOD.replace(b"T04", "\u00e904".encode()),
    "qty true": _GOOD.replace(b'"qty":1', b'"qty":true'),
    "qty 1.0": _GOOD.replace(b'"qty":1', b'"qty":1.0'),
    "qty 1e0": _GOOD.replace(b'"qty":1', b'"qty":1e0'),
    "qty -0": _GOOD.replace(b'"qty":1', b'"qty":-0'),
    "qty 2**64": _GOOD.replace(b'"qty":1', b'"qty":18446744073709551616'),
    "qty 10**400": _GOOD.replace(b'"qty":1', b'"qty":1' + b"0" * 400),
    "qty 1e400": _GOOD.replace(b'"qty":1', b'"qty":1e400'),
    "schemaVersion true": _GOOD.replace(b'"schemaVersion":1', b'"schemaVersion":true'),
    "schemaVersion 1.0": _GOOD.replace(b'"schemaVersion":1', b'"schemaVersion":1.0'),
    "schemaVersion 0": _GOOD.replace(b'"schemaVersion":1', b'"schemaVersion":0'),
    "schemaVersion 2**63": _GOOD.replace(b'"schemaVersion":1',
                                         b'"schemaVersion":9223372036854775808'),
    "schemaVersion 2**64-1 (orjson: int)": _GOOD.replace(
        b'"schemaVersion":1', b'"schemaVersion":18446744073709551615'),
    "schemaVersion 2**64 (orjson: float)": _GOOD.replace(
        b'"schemaVersion":1', b'"schemaVersion":18446744073709551616'),
    "schemaVersion 10**400": _GOOD.replace(b'"schemaVersion":1', b'"schemaVersion":1' + b"0" * 400),
    "1e400 in an unknown field": _with(b'"x":1e400'),
    "10**400 in an unknown field": _with(b'"x":1' + b"0" * 400),
    "unknown field": _with(b'"somethingNew":"x"'),
    "nested object in an unknown field": _with(b'"x":{"a":[1,{"b":null}],"c":"d"}'),
    "deep nesting in an unknown field": _with(b'"x":' + b"[" * 1100 + b"]" * 1100),
    "nesting in a known field": _GOOD.replace(b'"98"', b'["98"]'),
    "expectedVersion 0": _with(b'"expectedVersion":0'),
    "expectedVersion 12": _with(b'"expectedVersion":12'),
    "expectedVersion null": _with(b'"expectedVersion":null'),
    "expectedVersion -1": _with(b'"expectedVersion":-1'),
    "expectedVersion true": _with(b'"expectedVersion":true'),
    "expectedVersion 1.0": _with(b'"expectedVersion":1.0'),
    "expectedVersion string": _with(b'"expectedVersion":"3"'),
    "expectedVersion 2**64": _with(b'"expectedVersion":18446744073709551616'),
    **{f"{k} null": _GOOD.replace(b'"%s":' % k.encode(), b'"%s":null,"_":' % k.encode())
       for k in ("type", "eventId", "customerId", "itemId", "qty", "occurredAt", "schemaVersion")},
    **{f"{k} missing": _without(k.encode())
       for k in ("type", "eventId", "customerId", "itemId", "qty", "occurredAt", "schemaVersion")},
    "upper-case eventId": _GOOD.replace(b"cf7b1a76", b"CF7B1A76"),
    "eventId without dashes": _GOOD.replace(b"cf7b1a76-0bf2-4696-b8bb-cc3d11cc7454",
                                            b"cf7b1a760bf24696b8bbcc3d11cc7454"),
    "eventId with a trailing newline": _GOOD.replace(b"7454", b"7454\\n"),
    "customerId with a trailing newline": _GOOD.replace(b"customer-145", b"customer-145\\n"),
    "numeric customerId": _GOOD.replace(b'"customer-145"', b"145"),
    "checkout with a numeric itemId": _GOOD.replace(b"ITEM_ADDED", b"CHECKOUT").replace(b'"98"',
                                                                                       b"9"),
    "checkout with a bad itemId and qty": _GOOD.replace(b"ITEM_ADDED", b"CHECKOUT")
    .replace(b'"98"', b'"not valid!"').replace(b'"qty":1', b'"qty":"x"'),
    "remove without qty": _without(b"qty").replace(b"ITEM_ADDED", b"ITEM_REMOVED"),
    "legacy type name": _GOOD.replace(b"ITEM_ADDED", b"ADD_ITEM"),
    "array": b"[" + _GOOD + b"]",
    "string": b'"x"',
    "number": b"1",
    "null": b"null",
    "empty": b"",
    "empty str": "",
    "whitespace only": b" \n",
    "leading and trailing whitespace": b" \t\r\n" + _GOOD + b" \t\r\n",
    "form feed": _GOOD + b"\f",
    "trailing garbage": _GOOD + b"x",
    "two documents": _GOOD + _GOOD,
    "trailing comma": _with(b'"x":1,'),
    "byte order mark": b"\xef\xbb\xbf" + _GOOD,
    "truncated": _GOOD[:-1],
    "NaN": _with(b'"x":NaN'),
    "control character in a string": _GOOD.replace(b"98", b"9\t8"),
    "None": None,
    "int": 5,
}


@pytest.mark.parametrize("raw", list(_EDGE_CASES.values()), ids=list(_EDGE_CASES))
def test_event_decoder_edge_cases_match_the_general_path(raw: object) -> None:
    _assert_same_as_reference(raw)


def test_event_decoder_edge_cases_give_what_orjson_gives() -> None:
    def fields(name: str) -> tuple:
        return decode_cart_event_fields(_EDGE_CASES[name])

    def reason(name: str) -> str:
        with pytest.raises(ContractError) as err:
            decode_cart_event_fields(_EDGE_CASES[name])
        return err.value.reason

    assert fields("duplicate key, last wins")[4] == 7
    assert fields("duplicate type")[1:5] == (EventType.CHECKOUT, "customer-145", None, None)
    assert fields("schemaVersion 2**64-1 (orjson: int)")[6] == 2**64 - 1
    assert reason("schemaVersion 2**64 (orjson: float)") == "WRONG_TYPE"
    assert fields("unknown field") == fields("good")
    assert fields("nested object in an unknown field") == fields("good")
    for name in ("lone surrogate in an unknown field", "invalid UTF-8 in an unknown field",
                 "duplicate qty, first is 10**400", "duplicate customerId, first is invalid UTF-8",
                 "1e400 in an unknown field", "deep nesting in an unknown field",
                 "bytes subclass (orjson refuses it, msgspec does not)", "empty", "None"):
        assert reason(name) == "INVALID_JSON", name
    assert fields("expectedVersion 12")[7] == 12 and fields("expectedVersion 0")[7] == 0
    assert fields("expectedVersion null")[7] is None and fields("good")[7] is None
    for name in ("expectedVersion -1", "expectedVersion true", "expectedVersion 1.0",
                 "expectedVersion string", "expectedVersion 2**64"):
        assert reason(name) == "WRONG_TYPE", name


@pytest.mark.parametrize("etype", ["ITEM_ADDED", "ITEM_REMOVED", "CHECKOUT", "CART_CLEARED"])
def test_events_in_the_writers_form_skip_the_general_path(monkeypatch: pytest.MonkeyPatch,
                                                          etype: str) -> None:
    def general_path(raw: object) -> tuple:
        raise AssertionError("took the general path")

    monkeypatch.setattr(events_module, "_decode_full", general_path)
    for ev in [new_cart_event(EventType(etype), "customer-1", "98", 3, event_id=EID),
               new_cart_event(EventType(etype), "7", "x.y", None if etype != "ITEM_ADDED" else 1),
               new_cart_event(EventType(etype), "7", "x.y", 2, expected_version=41)]:
        raw = encode_cart_event(ev)
        assert decode_cart_event_fields(raw) == decode_cart_event_fields(raw.decode())
        assert decode_cart_event(raw) == ev
    without_version = _without(b"schemaVersion")
    assert decode_cart_event_fields(without_version)[6] == 1


# Values that each check and each reader edge turn on, for any field...
_ODD_VALUES = [
    b"null", b"true", b"false", b"0", b"-1", b"-0", b"1.0", b"1e0", b"1e400", b"1" + b"0" * 400,
    b"9223372036854775807", b"9223372036854775808", b"18446744073709551615",
    b"18446744073709551616", b'""', b'"1"', b"[]", b"{}", b'{"a":[1,{"b":null}]}',
    b"[" * 1100 + b"]" * 1100, b'"\\ud800"', b'"\\udc00x"', b'"\xff"', b'"\xed\xa0\x80"',
    b'"\xc3\xa9"', b'"\\u0041"', b"NaN", b"01", b'"\t"',
]
# ...and the near misses of each field.
_NEAR_MISSES = {
    b"type": [b'"%s"' % t.encode() for t in ("ITEM_ADDED", "ITEM_REMOVED", "CHECKOUT",
                                              "CART_CLEARED", "ADD_ITEM", "REMOVE_ITEM",
                                              "CLEAR_CART", "TELEPORT", "item_added", "CHECKOUT ")],
    b"eventId": [b'"%s"' % e.encode() for e in (EID, EID.upper(), EID.replace("-", ""),
                                                f"{{{EID}}}", f"urn:uuid:{EID}", EID[:-1],
                                                EID[:-1] + "g", EID + "\\n")],
    b"customerId": [b'"123"', b"123", b'"a b"', b'"%s"' % (b"x" * 64), b'"%s"' % (b"x" * 65),
                    b'"c\\n"', b'"c@d:e.f-g_h"', b'"\\u0063"'],
    b"qty": [b"1", b"2", b"10000", b"10001", b'"2"'],
    b"occurredAt": [b'"2026-11-22"', b'"2026-11-22T10:00:00Z"', b'"2026-13-40"',
                    b'"2026-02-30T00:00:00Z"', b'"2026-11-22T25:00:00Z"', b'"yesterday"',
                    b'"2026-11-22\\u00e910:00"', b'"2026-11-22T10:00:00+25:00"'],
    b"schemaVersion": [b"1", b"2", b"99"],
}
_NEAR_MISSES[b"itemId"] = _NEAR_MISSES[b"customerId"]


def _members(etype: str) -> list[tuple[bytes, bytes]]:
    return [(b"schemaVersion", b"1"), (b"eventId", b'"%s"' % EID.encode()),
            (b"type", b'"%s"' % etype.encode()), (b"customerId", b'"customer-145"'),
            (b"itemId", b'"98"'), (b"qty", b"3"), (b"occurredAt", b'"2026-12-01T04:50:05Z"')]


def _document(members: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(b'"%s":%s' % m for m in members) + b"}"


def _single_changes() -> list[bytes]:
    """Valid events of each type with one member dropped, changed, repeated or added."""
    docs = []
    for etype in ["ITEM_ADDED", "ITEM_REMOVED", "CHECKOUT", "CART_CLEARED", "ADD_ITEM",
                  "REMOVE_ITEM", "CLEAR_CART"]:
        members = _members(etype)
        docs.append(_document(members))
        for i, (key, _) in enumerate(members):
            docs.append(_document(members[:i] + members[i + 1:]))
            for value in _NEAR_MISSES[key] + _ODD_VALUES:
                docs.append(_document(members[:i] + [(key, value)] + members[i + 1:]))
                docs.append(_document([(key, value)] + members))  # a later key overrides it
                docs.append(_document(members + [(key, value)]))
        for key in (b"x", b"eventType", b"\\u0074ype", b"\\ud800", b"\xff"):
            for value in _ODD_VALUES + _NEAR_MISSES[b"type"]:
                docs.append(_document(members + [(key, value)]))
                docs.append(_document([m for m in members if m[0] != b"type"] + [(key, value)]))
    return docs


def test_every_single_change_to_an_event_decodes_as_the_general_path() -> None:
    for raw in _single_changes():
        _assert_same_as_reference(raw)
        _assert_same_as_reference(raw.decode("utf-8", "surrogateescape"))
        _assert_same_as_reference(_Bytes(raw))


# JSON texts for any field: right and wrong types, near misses, edges of orjson's and msgspec's
# readers.
_json_values = st.one_of(
    st.sampled_from([
        b'"ITEM_ADDED"', b'"ITEM_REMOVED"', b'"CHECKOUT"', b'"CART_CLEARED"', b'"ADD_ITEM"',
        b'"REMOVE_ITEM"', b'"CLEAR_CART"', b'"TELEPORT"', b'"item_added"', b'"%s"' % EID.encode(),
        b'"%s"' % EID.upper().encode(), b'"%s"' % EID.replace("-", "").encode(),
        b'"{%s}"' % EID.encode(), b'"%s\\n"' % EID.encode(), b'"%s"' % EID[:-1].encode(),
        b'"123"', b'"customer-1\\n"', b'"a b"', b'""', b'"x\\n"', b'"%s"' % (b"x" * 65),
        b'"2026-11-22T10:00:00Z"', b'"2026-11-22"', b'"2026-13-40"', b'"2026-02-30T00:00:00Z"',
        b'"2026-11-22T25:00:00Z"', b'"yesterday"', b'"2026-11-22\\u00e910:00"',
        b"0", b"1", b"-1", b"-0", b"2", b"10000", b"10001", b"1.0", b"1e0", b"9223372036854775807",
        b"9223372036854775808", b"18446744073709551615", b"18446744073709551616", b"1e400",
        b"1" + b"0" * 400, b"true", b"false", b"null", b"[]", b'["1"]', b'{"a":{"b":[1,null]}}',
        b"[" * 1100 + b"]" * 1100, b'"\\u0041"', b'"\\ud800"', b'"\\udc00"', b'"\\ud83d\\ude00"',
        b'"\xff"', b'"\xed\xa0\x80"', b'"\xc3\xa9"', b"NaN", b"01", b'"\t"',
    ]),
    st.text(max_size=8).map(orjson.dumps),
    st.integers().map(lambda i: str(i).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(orjson.dumps),
    st.binary(max_size=3).map(lambda b: b'"' + b.replace(b'"', b"") + b'"'),
)
_json_keys = st.sampled_from([
    b"type", b"eventType", b"eventId", b"customerId", b"itemId", b"qty", b"occurredAt",
    b"schemaVersion", b"expectedVersion", b"\\u0074ype", b"Type", b"x", b"\\ud800", b"\xff",
])


@st.composite
def _event_documents(draw: st.DrawFn) -> bytes | str:
    """Writer-form events, often with members changed, dropped or added, or the text broken."""
    etype = draw(st.sampled_from(["ITEM_ADDED", "ITEM_REMOVED", "CHECKOUT", "CART_CLEARED",
                                  "ADD_ITEM", "REMOVE_ITEM", "CLEAR_CART"]))
    members = [(b"eventId", orjson.dumps(str(draw(st.uuids())))),
               (b"type", orjson.dumps(etype)),
               (b"customerId", orjson.dumps(draw(ids))),
               (b"itemId", orjson.dumps(draw(ids))),
               (b"qty", orjson.dumps(draw(st.integers(1, 10000)))),
               (b"occurredAt", orjson.dumps(draw(st.datetimes(timezones=st.just(UTC))))),
               (b"schemaVersion", orjson.dumps(draw(st.integers(1, 99))))]
    changes = draw(st.lists(st.tuples(st.integers(0, len(members) - 1),
                                      st.sampled_from(["odd value", "drop"])), max_size=2))
    for i, change in changes:
        key = members[i][0]
        if change == "drop":
            members[i] = (key, b"")
        else:
            members[i] = (key, draw(st.sampled_from(_NEAR_MISSES[key] + _ODD_VALUES)
                                    | _json_values))
    changed = [m for m in members if m[1]]
    for key, value in draw(st.lists(st.tuples(_json_keys, _json_values), max_size=2)):
        changed.insert(draw(st.integers(0, len(changed))), (key, value))
    raw = b"{" + b",".join(b'"%s":%s' % m for m in changed) + b"}"
    mutation = draw(st.sampled_from(["none"] * 14 + ["space", "garbage", "array", "truncate",
                                                     "insert", "str"]))
    if mutation == "space":
        raw = b" \n" + raw + b"\t\r "
    elif mutation == "garbage":
        raw += draw(st.sampled_from([b"x", b"}", b",", b"{}", b"\x00"]))
    elif mutation == "array":
        raw = b"[" + raw + b"]"
    elif mutation == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif mutation == "insert":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=2)) + raw[at:]
    elif mutation == "str":
        return raw.decode("utf-8", "surrogateescape")  # lone surrogates for invalid UTF-8
    return raw


@settings(max_examples=500, deadline=None)
@given(_event_documents())
def test_the_event_decoder_agrees_with_the_general_path(raw: bytes | str) -> None:
    _assert_same_as_reference(raw)
