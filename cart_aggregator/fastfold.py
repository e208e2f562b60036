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
from cart_aggregator.snapshots import rejection_json, rejections_from_snapshot
from cart_contract import CHECKED_OUT, OPEN, EventType

# A customer's state: customer_to_tuple's layout, lines being `Line`s.
# (customer_id, generation, status, lines, version, (eventId, partition, offset) | None,
#  rejections as their JSON (`snapshots.rejection_json`), dedupe window bytes, updatedAt)
State = tuple[Any, ...]
CID, GENERATION, STATUS, LINES, VERSION, LAST_EVENT, REJECTED_, WINDOW, UPDATED_AT = range(9)
# A cart line: (itemId, itemName, qty, unitPrice as an exact decimal string, totalPrice, JSON,
# the line as a snapshot holds it, totalPrice in cents when it is a whole number of cents).
Line = tuple[str, str, int, str, Decimal, bytes, tuple[str, str, int, str, str], int | None]

REMOVE = EventType.ITEM_REMOVED.value
CLEAR = EventType.CART_CLEARED.value
CHECKOUT = EventType.CHECKOUT.value
_ZERO = Decimal(0)
_CENT = Decimal("0.01")
_WINDOW_BYTES = DEDUPE_WINDOW * 16
# A cart's total in cents stays below this, or it is summed as Decimal (see `_cents`).
_MAX_CENTS = 10**20


def _money(d: Decimal) -> str:
    # cart_contract.money, then str: the record's two-decimal form.
    return str(d.quantize(_CENT, ROUND_HALF_EVEN))


def _cents(total: Decimal) -> int | None:
    """`total` as a whole number of cents, or None when it has more decimals (or is huge).

    A cart of whole-cent lines then sums ints and prints "%d.%02d", which is what `_money`
    prints for that sum: no rounding happens, and below _MAX_CENTS nothing exceeds the
    decimal context's precision.
    """
    cents = total * 100
    if cents != cents.to_integral_value() or not 0 <= cents < _MAX_CENTS:
        return None
    return int(cents)


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
                                      (item_id, item_name, qty, unit_price, str(total)),
                                      _cents(total))
        return line


def _rejection_template(etype: str, reason: str, has_item: bool) -> bytes:
    """`snapshots.rejection_json` of a rejection with this type and reason, the ids left as %s."""
    raw = rejection_json("@E@", etype, "@I@" if has_item else None, reason)
    return raw.replace(b"@E@", b"%s").replace(b"@I@", b"%s")


# Each reason goes with one event type, with an itemId (adds, removes) or without (the rest):
# a rejection is a formatting of its ids, which need no escaping (canonical UUIDs, ID_RE).
_REJECTION = {
    UNKNOWN_PRODUCT: _rejection_template(ADD, UNKNOWN_PRODUCT, True),
    INSUFFICIENT_STOCK: _rejection_template(ADD, INSUFFICIENT_STOCK, True),
    NOT_IN_CART: _rejection_template(REMOVE, NOT_IN_CART, True),
    NO_OPEN_CART: _rejection_template(CLEAR, NO_OPEN_CART, False),
    EMPTY_CART: _rejection_template(CHECKOUT, EMPTY_CART, False),
}
_fromhex = bytes.fromhex


def apply_wire(state: State | None, w: Wire, cache: LineCache) -> tuple[State, int]:
    """`fold.apply` of one event as it travels; returns the new state and the metrics outcome."""
    # The hot path of the flow, once per event: calls, generator expressions and temporary
    # objects are avoided on purpose (Python 3.11 makes each a frame or an allocation).
    eid = w[1]
    if state is None:
        state = (w[3], 0, None, (), 0, None, (), b"", "")
    cid, generation, status, lines, version, _, rejected, window, _ = state
    try:
        eid_bytes = _fromhex(eid.replace("-", ""))  # = fold._id_bytes for canonical ids
    except ValueError:
        eid_bytes = b""
    if len(eid_bytes) != 16:
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
                item_id, qty, at = w[4], w[5], -1
                if is_open:
                    for j, li in enumerate(lines):
                        if li[0] == item_id:
                            qty += li[2]
                            at = j
                            break
                if qty > product[3]:
                    reason = INSUFFICIENT_STOCK
                else:
                    # The whole line takes the catalog's name and price as of this event.
                    line = cache.lines.get((product[0], product[1], product[2], qty))
                    if line is None:
                        line = cache.get(product[0], product[1], product[2], qty)
                    if not is_open:
                        lines, generation, status = (line,), generation + 1, OPEN
                    elif at < 0:
                        lines = (*lines, line)
                    else:
                        lines = (*lines[:at], line, *lines[at + 1:])
        elif etype == REMOVE:
            item_id, at = w[4], -1
            if is_open:
                for j, li in enumerate(lines):
                    if li[0] == item_id:
                        at = j
                        break
            if at < 0:
                reason = NOT_IN_CART
            else:
                current, qty = lines[at], w[5]
                if qty is None or qty >= current[2]:
                    lines = (*lines[:at], *lines[at + 1:])
                else:
                    shrunk = cache.get(current[0], current[1], current[3], current[2] - qty)
                    lines = (*lines[:at], shrunk, *lines[at + 1:])
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
            item = w[4]
            rejection = (_REJECTION[reason] % (eid.encode(), item.encode()) if item is not None
                         else _REJECTION[reason] % eid.encode())
            rejected = (*rejected, rejection)[-REJECTIONS_KEPT:]
    return (cid, generation, status, lines, version + 1, (eid, w[8], w[9]), rejected,
            (window + eid_bytes)[-_WINDOW_BYTES:], w[6]), outcome


# The record's layout, as orjson writes the dict of `cart_details_to_dict` (compact, in this
# key order). Only values that cannot need escaping go in raw: ids match cart_contract.ID_RE,
# eventIds are canonical UUIDs, statuses and numbers are plain; names sit in the lines' JSON,
# rejections are kept as JSON, and updatedAt (free text) goes through orjson.
_RECORD = (b'{"customerId":"%s","cartId":"%s:%d","status":"%s","lineItems":[%s],"totalQty":%d,'
           b'"totalPrice":"%s","version":%d,"lastEvent":{"eventId":"%s","partition":%d,'
           b'"offset":%d},"rejected":[%s],"updatedAt":%s,"schemaVersion":1}')
_STATUS = {None: OPEN.encode(), OPEN: OPEN.encode(), CHECKED_OUT: CHECKED_OUT.encode()}
# A sum of whole-cent lines below this prints exactly as the Decimal sum would (see `_cents`).
_MAX_TOTAL_CENTS = 10**26


def encode_state(s: State) -> bytes:
    """The cart-details record of a state, byte for byte `encode_cart_details(to_cart_details)`."""
    cid, generation, status, lines, version, last, rejected, _, updated_at = s
    qty = cents = 0
    parts = []
    try:
        for li in lines:
            qty += li[2]
            cents += li[7]  # None (not whole cents): TypeError
            parts.append(li[5])
        if cents >= _MAX_TOTAL_CENTS:
            raise TypeError
        total = b"%d.%02d" % divmod(cents, 100)
    except TypeError:
        qty, exact, parts = 0, _ZERO, []
        for li in lines:
            qty += li[2]
            exact += li[4]
            parts.append(li[5])
        total = _money(exact).encode()
    cid_bytes = cid.encode()
    return _RECORD % (
        cid_bytes, cid_bytes, generation, _STATUS[status], b",".join(parts), qty, total, version,
        last[0].encode(), last[1], last[2], b",".join(rejected), orjson.dumps(updated_at))


def to_snapshot(s: State) -> tuple[Any, ...]:
    """The state as `snapshots.customer_to_tuple` writes it (str/int/bytes only)."""
    return (*s[:LINES], tuple([li[6] for li in s[LINES]]), *s[VERSION:])


def from_snapshot(t: tuple[Any, ...], cache: LineCache) -> State:
    """A state back from `to_snapshot` (or `customer_to_tuple`), compacted as `fold.compact`."""
    lines = tuple(cache.get(i, n, u, q) for i, n, q, u, _ in t[LINES])
    return (*t[:LINES], lines, t[VERSION], None if t[LAST_EVENT] is None else tuple(t[LAST_EVENT]),
            rejections_from_snapshot(t[REJECTED_][-REJECTIONS_KEPT:]), t[WINDOW][-_WINDOW_BYTES:],
            t[UPDATED_AT])
