"""The fold's CustomerState as a flat tuple for recovery snapshots.

bytewax pickles every changed customer's state at each epoch. Pickling the frozen slotted
dataclasses goes through `dataclasses.fields()` for every object (~20 µs a customer); a flat
tuple of str/int/bytes pickles in ~3 µs and a third smaller. `SHAPE` fingerprints the field
lists the conversion relies on: it is part of the flow's STATE_FORMAT, so recovery state of
another shape is never unpickled into this one.

Rejections are kept as the JSON the record shows them in (`rejection_json`): the fold stage
publishes a customer's rejections with every record, and joining ready-made JSON is what makes
that cheap; it is also smaller than a tuple of four strings. Snapshots of the flow's format 3
held (eventId, type, itemId, reason) tuples; `rejections_from_snapshot` reads both.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import fields
from decimal import Decimal
from typing import Any

import orjson

from cart_aggregator.fold import CustomerState
from cart_contract import EventPosition, LineItem, Rejection

CUSTOMER_FIELDS = ("customer_id", "generation", "status", "lines", "version", "last_event",
                   "rejected", "recent_event_ids", "updated_at")
LINE_FIELDS = ("item_id", "item_name", "qty", "unit_price", "total_price")
POSITION_FIELDS = ("event_id", "partition", "offset")
REJECTION_FIELDS = ("event_id", "type", "item_id", "reason")


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


# The classes as they are now; differing from the lists above fails the tests and changes SHAPE.
ACTUAL = (_names(CustomerState), _names(LineItem), _names(EventPosition), _names(Rejection))
SHAPE = f"{zlib.crc32(repr(ACTUAL).encode()):08x}"


def rejection_json(event_id: str, type_: str, item_id: str | None, reason: str) -> bytes:
    """A rejection as the cart-details record shows it (`cart_details_to_dict`'s form)."""
    return orjson.dumps({"eventId": event_id, "type": type_, "itemId": item_id, "reason": reason})


def rejections_from_snapshot(rejected: Iterable[Any]) -> tuple[bytes, ...]:
    """Snapshotted rejections as JSON, whether written as JSON or as format 3's tuples."""
    return tuple(r if type(r) is bytes else rejection_json(*r) for r in rejected)


def customer_to_tuple(s: CustomerState) -> tuple[Any, ...]:
    """A CustomerState as nested tuples of str/int/bytes (prices as exact decimal strings)."""
    last = s.last_event
    return (s.customer_id, s.generation, s.status,
            tuple((li.item_id, li.item_name, li.qty, str(li.unit_price), str(li.total_price))
                  for li in s.lines),
            s.version, None if last is None else (last.event_id, last.partition, last.offset),
            tuple(rejection_json(r.event_id, r.type, r.item_id, r.reason) for r in s.rejected),
            s.recent_event_ids, s.updated_at)


def customer_from_tuple(t: tuple[Any, ...]) -> CustomerState:
    """The CustomerState back from `customer_to_tuple`."""
    cid, generation, status, lines, version, last, rejected, window, updated_at = t
    return CustomerState(
        cid, generation, status,
        tuple(LineItem(i, n, q, Decimal(u), Decimal(tp)) for i, n, q, u, tp in lines),
        version, None if last is None else EventPosition(*last),
        tuple(_rejection(r) for r in rejections_from_snapshot(rejected)), window, updated_at,
    )


def _rejection(raw: bytes) -> Rejection:
    d = orjson.loads(raw)
    return Rejection(d["eventId"], d["type"], d["itemId"], d["reason"])
