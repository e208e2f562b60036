"""The fold's CustomerState as a flat tuple for recovery snapshots.

bytewax pickles every changed customer's state at each epoch. Pickling the frozen slotted
dataclasses goes through `dataclasses.fields()` for every object (~20 µs a customer); a flat
tuple of str/int/bytes pickles in ~3 µs and a third smaller. `SHAPE` fingerprints the field
lists the conversion relies on: it is part of the flow's STATE_FORMAT, so recovery state of
another shape is never unpickled into this one.
"""

from __future__ import annotations

import zlib
from dataclasses import fields
from decimal import Decimal
from typing import Any

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


def customer_to_tuple(s: CustomerState) -> tuple[Any, ...]:
    """A CustomerState as nested tuples of str/int/bytes (prices as exact decimal strings)."""
    last = s.last_event
    return (s.customer_id, s.generation, s.status,
            tuple((li.item_id, li.item_name, li.qty, str(li.unit_price), str(li.total_price))
                  for li in s.lines),
            s.version, None if last is None else (last.event_id, last.partition, last.offset),
            tuple((r.event_id, r.type, r.item_id, r.reason) for r in s.rejected),
            s.recent_event_ids, s.updated_at)


def customer_from_tuple(t: tuple[Any, ...]) -> CustomerState:
    """The CustomerState back from `customer_to_tuple`."""
    cid, generation, status, lines, version, last, rejected, window, updated_at = t
    return CustomerState(
        cid, generation, status,
        tuple(LineItem(i, n, q, Decimal(u), Decimal(tp)) for i, n, q, u, tp in lines),
        version, None if last is None else EventPosition(*last),
        tuple(Rejection(*r) for r in rejected), window, updated_at,
    )
