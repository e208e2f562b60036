"""The redis sink's pub/sub notification: schema 2 carries the stored document, readers accept
schema 1 too."""

from __future__ import annotations

from decimal import Decimal

import orjson

from cart_contract import CartDetails, EventPosition, LineItem, encode_cart_details
from cart_contract.limits import NOTIFICATION_DOC_BYTES_MAX
from cart_contract.redis_carts import (
    NOTIFICATION_SCHEMA_VERSION,
    notification,
    parse_notification,
)


def cart(customer: str = "c-1", version: int = 4, lines: int = 1) -> CartDetails:
    items = tuple(LineItem(str(i), f"Product {i}", 1, Decimal("1.50"), Decimal("1.50"))
                  for i in range(lines))
    return CartDetails(customer, f"{customer}:1", "OPEN", items, lines,
                       Decimal("1.50") * lines, version, EventPosition("e", 3, 77), (),
                       "2025-01-01T00:00:00.000000Z")


def test_the_notification_carries_the_stored_document_byte_for_byte() -> None:
    c = cart()
    doc = encode_cart_details(c)
    data = notification(c, doc)
    msg = orjson.loads(data)
    assert msg["schemaVersion"] == NOTIFICATION_SCHEMA_VERSION == 2
    assert (msg["customerId"], msg["version"], msg["partition"], msg["offset"]) == \
        ("c-1", 4, 3, 77)
    assert msg["doc"] == orjson.loads(doc)  # a JSON object, not a string
    note = parse_notification(data)
    assert note is not None
    assert (note.customer_id, note.version, note.partition, note.offset) == ("c-1", 4, 3, 77)
    assert note.doc == doc


def test_a_document_over_the_bound_is_only_named() -> None:
    big = cart(lines=200)
    doc = encode_cart_details(big)
    assert len(doc) > NOTIFICATION_DOC_BYTES_MAX
    note = parse_notification(notification(big, doc))
    assert note is not None and note.version == 4 and note.doc is None
    assert "doc" not in orjson.loads(notification(cart()))  # no document given


def test_schema_1_notifications_are_still_read() -> None:
    note = parse_notification(b'{"customerId":"c-1","version":2,"partition":0,"offset":9}')
    assert note is not None
    assert (note.customer_id, note.version, note.partition, note.offset, note.doc) == \
        ("c-1", 2, 0, 9, None)
    # customerId as a JSON int still names customer "42"; odd positions are unknown (None).
    note = parse_notification(b'{"customerId":42,"offset":true,"partition":"x"}')
    assert note is not None
    assert (note.customer_id, note.offset, note.partition) == ("42", None, None)


def test_a_document_not_last_or_beside_nested_values_is_re_encoded() -> None:
    doc = {"customer": {"doc": 1}, "lines": [1, 2]}
    for msg in ({"customerId": "a", "doc": doc, "version": 1},
                {"customerId": "a", "extra": {"doc": 2}, "doc": doc}):
        note = parse_notification(orjson.dumps(msg))
        assert note is not None and orjson.loads(note.doc or b"") == doc


def test_what_is_not_a_notification_is_none() -> None:
    for data in (b"not json", b"[]", b'{"version": 1}', b'{"customerId": null}',
                 b'{"customerId": {"a": 1}}', b"{\"customerId\": \"s\""):
        assert parse_notification(data) is None
    assert parse_notification('{"customerId": "s"}') is not None  # str payloads too
