"""The fold on flat tuples: the dataflow's hot path, proven equal to `fold` by tests.

`fold.apply` + `to_cart_details` + `encode_cart_details` build an event, a position, a state,
a record and a tree of dicts per event, and format every price again each time. This module
applies the same rules (`fold.py` stays the oracle and the documentation) to:

- the event as it travels between stages (`sequencing.Wire`), never turned into objects;
- a state tuple laid out as `snapshots.customer_to_tuple` writes it, whose lines are shared
  `Line` tuples that carry their own JSON and their snapshot form (a snapshot converts nothing);
- the record, one bytes formatting around the lines' ready-made JSON (free text via orjson).

tests/unit/test_fold_fast.py checks on generated logs that every record is byte-identical to
the oracle's and every snapshot equal to `customer_to_tuple` of the oracle's state.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from cart_aggregator.fold import (
    DEDUPE_WINDOW,
    EMPTY_CART,
    INSUFFICIENT_STOCK,
    NO_OPEN_CART,
    NOT_IN_CART,
    REJECTIONS_KEPT,
    UNKNOWN_PRODUCT,
    _id_bytes,
)
from cart_aggregator.metrics import APPLIED, DUPLICATE, REJECTED
from cart_aggregator.sequencing import ADD, Wire
from cart_contract import CHECKED_OUT, OPEN, EventType

# A customer's state: customer_to_tuple's layout, lines being `Line`s.
# (customer_id, generation, status, lines, version, (eventId, partition, offset) | None,
#  rejections as (eventId, type, itemId, reason), dedupe window bytes, updatedAt)
State = tuple[Any, ...]
CID, GENERATION, STATUS, LINES, VERSION, LAST_EVENT, REJECTED_, WINDOW, UPDATED_AT = range(9)
# A cart line: (itemId, itemName, qty, unitPrice as an exact decimal string, totalPrice, JSON,
# the line as a snapshot holds it).
Line = tuple[str, str, int, str, Decimal, bytes, tuple[str, str, int, str, str]]

REMOVE = EventType.ITEM_REMOVED.value
CLEAR = EventType.CART_CLEARED.value
CHECKOUT = EventType.CHECKOUT.value
_ZERO = Decimal(0)
_CENT = Decimal("0.01")
_WINDOW_BYTES = DEDUPE_WINDOW * 16


def _money(d: Decimal) -> str:
    # cart_contract.money, then str: the record's two-decimal form.
    return str(d.quantize(_CENT, ROUND_HALF_EVEN))


class LineCache:
    """Lines by (itemId, itemName, unitPrice, qty): carts share them, and their JSON is built once.

    Lines are immutable values, so any number of states may hold the same one. The cache is
    bounded: when full it starts over (states keep the lines they hold).
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.lines: dict[tuple[str, str, str, int], Line] = {}
        self.prices: dict[str, Decimal] = {}

    def get(self, item_id: str, item_name: str, unit_price: str, qty: int) -> Line:
        """The line for these values."""
        key = (item_id, item_name, unit_price, qty)
        line = self.lines.get(key)
        if line is None:
            if len(self.lines) >= self.limit:
                self.lines.clear()
                self.prices.clear()
            price = self.prices.get(unit_price)
            if price is None:
                price = self.prices[unit_price] = Decimal(unit_price)
            total = price * qty  # as fold._line: exact, rounded only when printed
            json = orjson.dumps({"itemId": item_id, "itemName": item_name, "qty": qty,
                                 "unitPrice": _money(price), "totalPrice": _money(total)})
            line = self.lines[key] = (item_id, item_name, qty, unit_price, total, json,
                                      (item_id, item_name, qty, unit_price, str(total)))
        return line


def _find(lines: tuple[Line, ...], item_id: str | None) -> Line | None:
    for li in lines:
        if li[0] == item_id:
            return li
    return None


def apply_wire(state: State | None, w: Wire, cache: LineCache) -> tuple[State, int]:
    """`fold.apply` of one event as it travels; returns the new state and the metrics outcome."""
    eid = w[1]
    if state is None:
        state = (w[3], 0, None, (), 0, None, (), b"", "")
    cid, generation, status, lines, version, _, rejected, window, _ = state
    eid_bytes = _id_bytes(eid)
    # fold._seen: a match must start on a slot boundary.
    i = window.find(eid_bytes)
    while i != -1 and i % 16:
        i = window.find(eid_bytes, i + 1)
    if i != -1:
        outcome = DUPLICATE
        window = window[:i] + window[i + 16:]
    else:
        outcome, reason, etype = APPLIED, None, w[2]
        is_open = status == OPEN
        if etype == ADD:
            product = w[10]
            if product is None:
                reason = UNKNOWN_PRODUCT
            else:
                item_id = w[4]
                current = _find(lines, item_id) if is_open else None
                qty = (current[2] if current else 0) + w[5]
                if qty > product[3]:
                    reason = INSUFFICIENT_STOCK
                else:
                    # The whole line takes the catalog's name and price as of this event.
                    line = cache.get(product[0], product[1], product[2], qty)
                    if not is_open:
                        lines, generation, status = (line,), generation + 1, OPEN
                    elif current is None:
                        lines = (*lines, line)
                    else:
                        lines = tuple(line if li is current else li for li in lines)
        elif etype == REMOVE:
            current = _find(lines, w[4])
            if not is_open or current is None:
                reason = NOT_IN_CART
            elif w[5] is None or w[5] >= current[2]:
                lines = tuple(li for li in lines if li is not current)
            else:
                shrunk = cache.get(current[0], current[1], current[3], current[2] - w[5])
                lines = tuple(shrunk if li is current else li for li in lines)
        elif etype == CLEAR:
            if is_open:
                lines = ()
            else:
                reason = NO_OPEN_CART
        elif etype == CHECKOUT:
            if not is_open or not lines:
                reason = EMPTY_CART
            else:
                status = CHECKED_OUT
        else:
            raise AssertionError(f"unhandled event type {etype}")
        if reason is not None:
            outcome = REJECTED
            rejected = (*rejected, (eid, etype, w[4], reason))[-REJECTIONS_KEPT:]
    return (cid, generation, status, lines, version + 1, (eid, w[8], w[9]), rejected,
            (window + eid_bytes)[-_WINDOW_BYTES:], w[6]), outcome


# The record's layout, as orjson writes the dict of `cart_details_to_dict` (compact, in this
# key order). Only values that cannot need escaping go in raw: ids match cart_contract.ID_RE,
# eventIds are canonical UUIDs, statuses and numbers are plain; names sit in the lines' JSON,
# and updatedAt and rejections (free text) go through orjson.
_RECORD = (b'{"customerId":"%s","cartId":"%s:%d","status":"%s","lineItems":[%s],"totalQty":%d,'
           b'"totalPrice":"%s","version":%d,"lastEvent":{"eventId":"%s","partition":%d,'
           b'"offset":%d},"rejected":%s,"updatedAt":%s,"schemaVersion":1}')
_STATUS = {None: OPEN.encode(), OPEN: OPEN.encode(), CHECKED_OUT: CHECKED_OUT.encode()}


def _rejections_json(rejected: tuple[tuple[str, str, str | None, str], ...]) -> bytes:
    return orjson.dumps([{"eventId": r[0], "type": r[1], "itemId": r[2], "reason": r[3]}
                         for r in rejected])


def encode_state(s: State) -> bytes:
    """The cart-details record of a state, byte for byte `encode_cart_details(to_cart_details)`."""
    cid, generation, status, lines, version, last, rejected, _, updated_at = s
    total_qty, total_price = 0, _ZERO
    for li in lines:
        total_qty += li[2]
        total_price += li[4]
    cid_bytes = cid.encode()
    return _RECORD % (
        cid_bytes, cid_bytes, generation, _STATUS[status], b",".join([li[5] for li in lines]),
        total_qty, _money(total_price).encode(), version, last[0].encode(), last[1], last[2],
        _rejections_json(rejected) if rejected else b"[]", orjson.dumps(updated_at))


def to_snapshot(s: State) -> tuple[Any, ...]:
    """The state as `snapshots.customer_to_tuple` writes it (str/int/bytes only)."""
    return (*s[:LINES], tuple([li[6] for li in s[LINES]]), *s[VERSION:])


def from_snapshot(t: tuple[Any, ...], cache: LineCache) -> State:
    """A state back from `to_snapshot` (or `customer_to_tuple`), compacted as `fold.compact`."""
    lines = tuple(cache.get(i, n, u, q) for i, n, q, u, _ in t[LINES])
    return (*t[:LINES], lines, t[VERSION], None if t[LAST_EVENT] is None else tuple(t[LAST_EVENT]),
            tuple(tuple(r) for r in t[REJECTED_][-REJECTIONS_KEPT:]), t[WINDOW][-_WINDOW_BYTES:],
            t[UPDATED_AT])
