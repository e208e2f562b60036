"""The dataflow's keyed stages as plain functions on immutable state (tests drive them directly).

1. sequence (key customerId): a customer's events arrive in `cart-events` offset order (one key,
   one partition), so each is stamped with the version it will produce: 1, 2, 3, ...
2. join (key productId): ITEM_ADDED events meet the catalog entry of their product as of their
   arrival; an add for a product never seen waits (bounded) for it. Other events bypass it.
3. resequence (key customerId): the join reorders, so events are released to the fold strictly
   in version order; early arrivals wait for their predecessors.

Between stages an event is a flat tuple of str/int/None (`Wire`): with several processes every
item crossing a process is pickled, and a flat tuple pickles ten times faster than dataclasses.
States are immutable (ints, tuples, frozen dataclasses), so a snapshot is the state object
itself: bytewax pickles snapshots later, and must never see a half-applied batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cart_contract import CartEvent, EventType, Product

# A cart event between stages:
# (version, eventId, type, customerId, itemId, qty, occurredAt, schemaVersion, partition, offset,
#  product) where product is a ProductTuple, or None (not an add, or no such product).
Wire = tuple[Any, ...]
VERSION, EVENT_ID, TYPE, CUSTOMER, ITEM, QTY = 0, 1, 2, 3, 4, 5
PARTITION, OFFSET, PRODUCT = 8, 9, 10
# A catalog entry between stages: (productId, productName, price as str, stockQty, schemaVersion).
ProductTuple = tuple[str, str, str, int, int]
ADD = EventType.ITEM_ADDED.value
_TYPES = {t.value: t for t in EventType}


def to_wire(event: CartEvent, partition: int, offset: int) -> Wire:
    """An event as read, before it has a version (0) or a product."""
    return (0, event.event_id, event.type.value, event.customer_id, event.item_id, event.qty,
            event.occurred_at, event.schema_version, partition, offset, None)


def product_tuple(p: Product) -> ProductTuple:
    """A product as it travels (str(Decimal) round-trips exactly)."""
    return (p.product_id, p.product_name, str(p.price), p.stock_qty, p.schema_version)


def stamp(last: int, items: Iterable[Wire]) -> tuple[int, list[Wire]]:
    """Number a customer's events after `last` (the version of the previous event)."""
    out = []
    for w in items:
        last += 1
        out.append((last, *w[1:]))
    return last, out


class ProductRecord(tuple[str, ProductTuple | None, int]):
    """A catalog record as read: (productId, product or None if deleted, offset)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One product's join state: its latest record, and the adds waiting for a first one."""

    product: ProductTuple | None = None
    # A record (product or deletion) has been read: adds no longer wait.
    known: bool = False
    offset: int = -1
    # (deadline, add) pairs, in arrival order.
    waiting: tuple[tuple[datetime, Wire], ...] = ()


def _with_product(w: Wire, product: ProductTuple | None) -> Wire:
    return (*w[:PRODUCT], product)


def join(
    entry: CatalogEntry, items: Iterable[Wire | ProductRecord], now: datetime, wait: timedelta
) -> tuple[CatalogEntry, list[Wire]]:
    """Apply catalog records and adds in arrival order; return the adds that can go on."""
    out: list[Wire] = []
    for item in items:
        if type(item) is ProductRecord:
            _, product, offset = item
            out.extend(_with_product(w, product) for _, w in entry.waiting)
            entry = CatalogEntry(product, True, offset)
        elif entry.known:
            out.append(_with_product(item, entry.product))
        else:
            entry = CatalogEntry(entry.product, False, entry.offset,
                                 (*entry.waiting, (now + wait, item)))
    return entry, out


def expire(entry: CatalogEntry, now: datetime | None) -> tuple[CatalogEntry, list[Wire]]:
    """Release, without a product, the adds whose wait is over (all of them if now is None)."""
    if not entry.waiting:
        return entry, []
    due = [w for d, w in entry.waiting if now is None or d <= now]
    if not due:
        return entry, []
    rest = () if now is None else tuple((d, w) for d, w in entry.waiting if d > now)
    return CatalogEntry(entry.product, entry.known, entry.offset, rest), due


def next_deadline(entry: CatalogEntry) -> datetime | None:
    """When the earliest waiting add gives up."""
    if not entry.waiting:  # bytewax asks every product after every batch
        return None
    return min(d for d, _ in entry.waiting)


def restart_waits(entry: CatalogEntry, now: datetime, wait: timedelta) -> CatalogEntry:
    """After a restart, waiting adds get a full wait again: the clock ran while we were down."""
    if not entry.waiting:
        return entry
    fresh = now + wait
    return CatalogEntry(entry.product, entry.known, entry.offset,
                        tuple((max(d, fresh), w) for d, w in entry.waiting))


def release_in_order(
    next_version: int, early: dict[int, Wire], items: Iterable[Wire]
) -> tuple[list[Wire], int]:
    """The items that can be folded now, in version order, and how many of `items` must wait.

    Waiting items are added to `early`, in place. Items below `next_version` were folded
    already (a repeat) and are dropped.
    """
    ready: list[Wire] = []
    parked = 0
    for item in items:
        v = item[VERSION]
        if v == next_version:
            ready.append(item)
            next_version += 1
            while early:
                nxt = early.pop(next_version, None)
                if nxt is None:
                    break
                ready.append(nxt)
                next_version += 1
        elif v > next_version:
            early[v] = item
            parked += 1
    return ready, parked
