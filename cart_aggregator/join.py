"""The product-keyed join as plain functions on immutable state (tests drive them directly).

Every ITEM_ADDED event goes to the customer's fold (in log order) and, as a `Request`, to this
join keyed by its productId. The join answers each request with the catalog entry of its
product as of the request's arrival; a request for a product never seen waits (bounded) for
its first record, then is answered with None (UNKNOWN_PRODUCT). An `Answer` goes back keyed by
customerId to the fold, which holds the customer's later events until the add has its answer.

States are immutable (ints, tuples, frozen dataclasses), so a snapshot is the state object
itself: bytewax pickles snapshots later, and must never see a half-applied batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cart_aggregator.fold import ProductTuple
from cart_contract import Product

# What the fold asks a keyed stage for: (customerId, offset of the event that waits).
# A customer's events all come from one partition, so the offset names the event.
Request = tuple[str, int]
# What comes back to the fold, keyed by customerId: (offset of the event that waits, answer).
Answer = tuple[int, Any]


def product_tuple(p: Product) -> ProductTuple:
    """A product as it travels (str(Decimal) round-trips exactly)."""
    return (p.product_id, p.product_name, str(p.price), p.stock_qty, p.schema_version)


class ProductRecord(tuple[str, ProductTuple | None, int]):
    """A catalog record as read: (productId, product or None if deleted, offset)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One product's join state: its latest record, and the requests waiting for a first one."""

    product: ProductTuple | None = None
    # A record (product or deletion) has been read: requests no longer wait.
    known: bool = False
    offset: int = -1
    # (deadline, request) pairs, in arrival order.
    waiting: tuple[tuple[datetime, Request], ...] = ()


def _answer(request: Request, product: ProductTuple | None) -> tuple[str, Answer]:
    return request[0], (request[1], product)


def join(
    entry: CatalogEntry, items: Iterable[Request | ProductRecord], now: datetime, wait: timedelta
) -> tuple[CatalogEntry, list[tuple[str, Answer]]]:
    """Apply catalog records and requests in arrival order; return the (customerId, Answer)s."""
    out: list[tuple[str, Answer]] = []
    for item in items:
        if type(item) is ProductRecord:
            _, product, offset = item
            out.extend(_answer(r, product) for _, r in entry.waiting)
            entry = CatalogEntry(product, True, offset)
        elif entry.known:
            out.append((item[0], (item[1], entry.product)))
        else:
            entry = CatalogEntry(entry.product, False, entry.offset,
                                 (*entry.waiting, (now + wait, item)))
    return entry, out


def expire(entry: CatalogEntry,
           now: datetime | None) -> tuple[CatalogEntry, list[tuple[str, Answer]]]:
    """Answer None to the requests whose wait is over (all of them if now is None)."""
    if not entry.waiting:
        return entry, []
    due = [_answer(r, None) for d, r in entry.waiting if now is None or d <= now]
    if not due:
        return entry, []
    rest = () if now is None else tuple((d, r) for d, r in entry.waiting if d > now)
    return CatalogEntry(entry.product, entry.known, entry.offset, rest), due


def next_deadline(entry: CatalogEntry) -> datetime | None:
    """When the earliest waiting request gives up."""
    if not entry.waiting:  # bytewax asks every product after every batch
        return None
    return min(d for d, _ in entry.waiting)


def restart_waits(entry: CatalogEntry, now: datetime, wait: timedelta) -> CatalogEntry:
    """After a restart, waiting requests get a full wait again: the clock ran while we were down."""
    if not entry.waiting:
        return entry
    fresh = now + wait
    return CatalogEntry(entry.product, entry.known, entry.offset,
                        tuple((max(d, fresh), r) for d, r in entry.waiting))
