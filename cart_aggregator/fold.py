"""The cart's business rules: one fold (state, event, answer) -> state, and the record it publishes.

The dataflow applies it per customer in `cart-events` offset order. No I/O, no clock:
`updatedAt` is the event's `occurredAt`, so replaying a log gives identical records.
tests/support/fold_model.py is a small readable model of the same rules (objects, Decimals,
`cart_contract.encode_cart_details`); tests/unit/test_fold_fast.py checks on generated logs that
every record here is byte-identical to the model's and every state equal to it.

A customer's state (`CustomerState`, immutable):
- customer_id;
- generation: 0 until a cart is first opened; cartId = f"{customer_id}:{generation}";
- status: None before the first cart, else OPEN or CHECKED_OUT;
- lines: the current cart's `Line`s in first-added order (kept after checkout: the published
  record shows the ordered lines until a new cart opens);
- version: the customer's version, one step per cart event read, whatever its outcome (applied,
  rejected, duplicate): what `If-Match` is compared with, and the read side's ETag;
- last_event: (eventId, partition, offset) of that event; updated_at: its occurredAt;
- rejected: the customer's last REJECTIONS_KEPT rejections, oldest first, as the record's JSON;
- recent_event_ids: the dedupe window, the eventIds of the customer's last DEDUPE_WINDOW events
  as 16-byte UUIDs packed into one bytes object (512 bytes), least recently seen first;
- cart_rejected: the last REJECTIONS_KEPT rejections of the current cart (a new cart starts
  with none: a rejection never carries over into the next cart);
- order: None while the cart is live (OPEN, or no cart yet); once it is checked out, the
  (version, last_event, updated_at) of the checkout, which the order keeps for ever.

The record shows the cart (the open one, or the last order) at its top level, and the customer
under "customer" (version, lastEvent, rejected, updatedAt). While the cart is live both move
together; after checkout the top level is frozen (the sinks store the same order bytes whatever
comes next) and only "customer" advances, which is what a client waiting with minOffset reads.
The rules themselves are listed in docs/architecture.md, "Rules".

Dedupe: an event whose eventId is in the window changes nothing but the version, position and
updatedAt (and moves to the window's recent end). A client retry whose original is more than
DEDUPE_WINDOW events of that customer back is applied again; retries come seconds after the
original, so in practice the window covers them.

The record's bytes are formatted here and nowhere else in the aggregator (`encode_state`): the
lines carry their own JSON, rejections are kept as JSON, so a record is one bytes formatting.
"""

from __future__ import annotations

import uuid
import zlib
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple

import msgspec
import orjson

from cart_aggregator.metrics import APPLIED, DUPLICATE, REJECTED
from cart_contract import CHECKED_OUT, OPEN, EventType
from cart_contract.limits import LINE_QTY_MAX, LINES_MAX

DEDUPE_WINDOW = 32
REJECTIONS_KEPT = 10
_UUID_LEN = 16
_WINDOW_BYTES = DEDUPE_WINDOW * _UUID_LEN

UNKNOWN_PRODUCT = "UNKNOWN_PRODUCT"
INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
NOT_IN_CART = "NOT_IN_CART"
NO_OPEN_CART = "NO_OPEN_CART"
EMPTY_CART = "EMPTY_CART"
CART_LIMIT = "CART_LIMIT"
VERSION_CONFLICT = "VERSION_CONFLICT"
REASONS = (UNKNOWN_PRODUCT, INSUFFICIENT_STOCK, NOT_IN_CART, NO_OPEN_CART, EMPTY_CART, CART_LIMIT,
           VERSION_CONFLICT)
# A checkout's answer from the reservation stage (cart_aggregator.reserve): RESERVED with the
# order's lines as priced at checkout, or one of the reasons with the products it names.
RESERVED = "RESERVED"
OUT_OF_STOCK = "OUT_OF_STOCK"
PRODUCT_UNAVAILABLE = "PRODUCT_UNAVAILABLE"

ADD = EventType.ITEM_ADDED.value
REMOVE = EventType.ITEM_REMOVED.value
CLEAR = EventType.CART_CLEARED.value
CHECKOUT = EventType.CHECKOUT.value

# A cart event as it travels between stages: a flat tuple of str/int/None (with several
# processes every item crossing a process is pickled, and a flat tuple pickles fastest).
Wire = tuple[Any, ...]
# expected_version: the command's If-Match, None without one.
WIRE_FIELDS = ("event_id", "type", "customer_id", "item_id", "qty", "occurred_at", "partition",
               "offset", "expected_version")
EVENT_ID, TYPE, CUSTOMER, ITEM, QTY, AT, PARTITION, OFFSET, EXPECTED = range(len(WIRE_FIELDS))
# A catalog entry as it travels: (productId, productName, price as an exact decimal string,
# stockQty, schemaVersion).
ProductTuple = tuple[str, str, str, int, int]
PRODUCT_FIELDS = ("product_id", "product_name", "price", "stock_qty", "schema_version")

_ZERO = Decimal(0)
_CENT = Decimal("0.01")
# A cart's total in cents stays below this, or it is summed as Decimal (see `_cents`).
_MAX_CENTS = 10**20
# A sum of whole-cent lines below this prints exactly as the Decimal sum would.
_MAX_TOTAL_CENTS = 10**26


class SavedLine(NamedTuple):
    """A cart line as a snapshot holds it (str/int only)."""

    item_id: str
    item_name: str
    qty: int
    unit_price: str  # exact decimal string
    total_price: str
    added_price: str | None  # an order's line repriced at checkout: the price it was added at


class Line(msgspec.Struct, frozen=True, gc=False):
    """A cart line. Immutable and shared: carts hold the same `Line` (see `LineCache`)."""

    item_id: str
    item_name: str
    qty: int
    unit_price: str  # exact decimal string, as the catalog gave it
    total_price: Decimal  # exact, rounded only when printed
    json: bytes  # the line as the record shows it
    cents: int | None  # total_price in cents when it is a whole number of cents
    saved: tuple[Any, ...]  # the line as a snapshot holds it (SavedLine's layout)
    added_price: str | None = None  # see SavedLine


# msgspec Structs rather than NamedTuples: CPython 3.11 specialises attribute loads of their
# fields (slots) but neither indexing nor unpacking of tuple subclasses, and they are smaller
# (gc=False: they hold only str, int, bytes, Decimal and tuples of those, so no cycles).
class CustomerState(msgspec.Struct, frozen=True, gc=False):
    """Everything the fold needs to know about one customer (see the module doc)."""

    customer_id: str
    generation: int
    status: str | None
    lines: tuple[Line, ...]
    version: int
    last_event: tuple[str, int, int] | None
    rejected: tuple[bytes, ...]
    recent_event_ids: bytes
    updated_at: str
    cart_rejected: tuple[bytes, ...] = ()
    order: tuple[int, tuple[str, int, int], str] | None = None


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
        self.lines: dict[tuple[str, str, str, int, str | None], Line] = {}
        self.prices: dict[str, Decimal] = {}

    def get(self, item_id: str, item_name: str, unit_price: str, qty: int,
            added_price: str | None = None) -> Line:
        """The line for these values (`added_price`: an order's line whose price changed)."""
        key = (item_id, item_name, unit_price, qty, added_price)
        line = self.lines.get(key)
        if line is None:
            if len(self.lines) >= self.limit:
                self.lines.clear()
                self.prices.clear()
            price = self.prices.get(unit_price)
            if price is None:
                price = self.prices[unit_price] = Decimal(unit_price)
            total = price * qty
            doc: dict[str, Any] = {"itemId": item_id, "itemName": item_name, "qty": qty,
                                   "unitPrice": _money(price), "totalPrice": _money(total)}
            if added_price is not None:
                doc["priceChanged"] = True
                doc["addedPrice"] = _money(Decimal(added_price))
            line = self.lines[key] = Line(
                item_id, item_name, qty, unit_price, total, orjson.dumps(doc),
                _cents(total), (item_id, item_name, qty, unit_price, str(total), added_price),
                added_price)
        return line


def id_bytes(event_id: str) -> bytes:
    """An eventId as 16 bytes (the readers give the canonical text; anything else: uuid.UUID)."""
    # bytes.fromhex is several times cheaper than uuid.UUID, and this runs once per event.
    try:
        raw = bytes.fromhex(event_id.replace("-", ""))
    except ValueError:
        raw = b""
    return raw if len(raw) == _UUID_LEN else uuid.UUID(event_id).bytes


def rejection_json(event_id: str, type_: str, item_id: str | None, reason: str,
                   item_ids: tuple[str, ...] = ()) -> bytes:
    """A rejection as the cart-details record shows it (`itemIds` only when given)."""
    doc: dict[str, Any] = {"eventId": event_id, "type": type_, "itemId": item_id,
                           "reason": reason}
    if item_ids:
        doc["itemIds"] = list(item_ids)
    return orjson.dumps(doc)


def is_duplicate(state: CustomerState | None, event_id: str) -> bool:
    """Whether the event's id is in the customer's dedupe window (`apply` changes no cart)."""
    if state is None:
        return False
    eid, window = id_bytes(event_id), state.recent_event_ids
    i = window.find(eid)
    while i != -1 and i % _UUID_LEN:
        i = window.find(eid, i + 1)
    return i != -1


def needs_reservation(state: CustomerState | None, w: Wire) -> bool:
    """Whether `w` is a checkout that the reservation stage must answer before `apply`.

    A checkout that `apply` would accept (`checkout_rejection`: an open cart with lines), not a
    repeat and not a version conflict: the others are decided here alone.
    """
    return (w[TYPE] == CHECKOUT and state is not None
            and checkout_rejection(state.status == OPEN, state.lines) is None
            and (w[EXPECTED] is None or w[EXPECTED] == state.version)
            and not is_duplicate(state, w[EVENT_ID]))


# A reservation request as the fold emits it: (customerId, eventId, offset, lines), the lines as
# (itemId, qty, unitPrice) of the cart being checked out.
ReservationRequest = tuple[str, str, int, tuple[tuple[str, int, str], ...]]


def reservation_request(state: CustomerState, w: Wire) -> ReservationRequest:
    """What the reservation stage needs to decide the checkout `w` of `state`'s cart."""
    return (state.customer_id, w[EVENT_ID], w[OFFSET],
            tuple([(li.item_id, li.qty, li.unit_price) for li in state.lines]))


def _order_lines(lines: tuple[Line, ...], priced: tuple[tuple[str, str, int, str], ...],
                 cache: LineCache) -> tuple[Line, ...]:
    """The order's lines as the reservation priced them: (itemId, itemName, qty, unitPrice).

    A line whose price at checkout differs from the cart's keeps the cart's as `added_price`.
    """
    added = {li.item_id: li.unit_price for li in lines}
    out = []
    for item_id, name, qty, price in priced:
        before = added.get(item_id)
        changed = before is not None and Decimal(before) != Decimal(price)
        out.append(cache.get(item_id, name, price, qty, before if changed else None))
    return tuple(out)


def _rejection_template(etype: str, reason: str, has_item: bool) -> bytes:
    """`rejection_json` of a rejection with this type and reason, the ids left as %s."""
    raw = rejection_json("@E@", etype, "@I@" if has_item else None, reason)
    return raw.replace(b"@E@", b"%s").replace(b"@I@", b"%s")


# Per (event type, reason): adds and removes carry an itemId, the rest none. A rejection is a
# formatting of its ids, which need no escaping (canonical UUIDs, ID_RE).
_REJECTION = {(t, r): _rejection_template(t, r, t in (ADD, REMOVE))
              for t in (ADD, REMOVE, CLEAR, CHECKOUT) for r in REASONS}
_CHECKOUT_REFUSALS = frozenset({OUT_OF_STOCK, PRODUCT_UNAVAILABLE})
_fromhex = bytes.fromhex


def checkout_rejection(is_open: bool, lines: tuple[Line, ...]) -> str | None:
    """Why a checkout is refused, None when it is accepted (the cart becomes the order)."""
    if not is_open:
        return NO_OPEN_CART
    if not lines:
        return EMPTY_CART
    return None


def apply(state: CustomerState | None, w: Wire, product: ProductTuple | None,
          cache: LineCache) -> tuple[CustomerState, int]:
    """Apply one cart event; returns the new state and the metrics outcome.

    `product` is the answer the event waited for: an add's catalog entry as of the event (None:
    no such product); a checkout that `needs_reservation` its reservation's answer, (RESERVED,
    the order's lines as priced at checkout) or (OUT_OF_STOCK | PRODUCT_UNAVAILABLE, the
    products named); other events take None.
    """
    # The hot path of the flow, once per event: calls, generator expressions and temporary
    # objects are avoided on purpose (Python 3.11 makes each a frame or an allocation).
    eid, etype, customer, item, qty, occurred_at, partition, offset, expected = w
    if state is None:
        state = CustomerState(customer, 0, None, (), 0, None, (), b"", "")
    generation, status, lines = state.generation, state.status, state.lines
    rejected, window = state.rejected, state.recent_event_ids
    cart_rejected, order = state.cart_rejected, state.order
    try:
        eid_bytes = _fromhex(eid.replace("-", ""))
    except ValueError:
        eid_bytes = b""
    if len(eid_bytes) != _UUID_LEN:
        eid_bytes = id_bytes(eid)
    # A match in the window must start on a slot boundary, not straddle two ids.
    i = window.find(eid_bytes)
    while i != -1 and i % _UUID_LEN:
        i = window.find(eid_bytes, i + 1)
    if i != -1:
        outcome = DUPLICATE
        window = window[:i] + window[i + _UUID_LEN:]
    else:
        outcome, reason, named = APPLIED, None, ()
        is_open = status == OPEN
        if expected is not None and expected != state.version:
            reason = VERSION_CONFLICT
        elif etype == ADD:
            if product is None:
                reason = UNKNOWN_PRODUCT
            else:
                at = -1
                if is_open:
                    for j, li in enumerate(lines):
                        if li.item_id == item:
                            qty += li.qty
                            at = j
                            break
                # The cart limits (cart_contract.limits), then the stock.
                if qty > LINE_QTY_MAX or (at < 0 and is_open and len(lines) >= LINES_MAX):
                    reason = CART_LIMIT
                elif qty > product[3]:
                    reason = INSUFFICIENT_STOCK
                else:
                    # The whole line takes the catalog's name and price as of this event.
                    line = cache.lines.get((product[0], product[1], product[2], qty, None))
                    if line is None:
                        line = cache.get(product[0], product[1], product[2], qty)
                    if not is_open:
                        lines, generation, status = (line,), generation + 1, OPEN
                        cart_rejected = ()  # a new cart: no rejection carries over
                    elif at < 0:
                        lines = (*lines, line)
                    else:
                        lines = (*lines[:at], line, *lines[at + 1:])
        elif etype == REMOVE:
            at = -1
            if is_open:
                for j, li in enumerate(lines):
                    if li.item_id == item:
                        at = j
                        break
            if at < 0:
                reason = NOT_IN_CART
            else:
                current = lines[at]
                if qty is None or qty >= current.qty:
                    lines = (*lines[:at], *lines[at + 1:])
                else:
                    shrunk = cache.get(current.item_id, current.item_name, current.unit_price,
                                       current.qty - qty)
                    lines = (*lines[:at], shrunk, *lines[at + 1:])
        elif etype == CLEAR:
            if is_open:
                lines = ()
            else:
                reason = NO_OPEN_CART
        elif etype == CHECKOUT:
            reason = checkout_rejection(is_open, lines)
            if reason is None:  # checkout accepted: its reservation decides
                if product is None:
                    raise AssertionError("a checkout of an open cart needs its reservation's "
                                         "answer")
                verdict, detail = product
                if verdict == RESERVED:  # the cart becomes the order, priced at checkout
                    lines, status = _order_lines(lines, detail, cache), CHECKED_OUT
                else:
                    reason, named = verdict, tuple(detail)
        else:
            raise AssertionError(f"unhandled event type {etype}")
        if reason is not None:
            outcome = REJECTED
            if reason in _CHECKOUT_REFUSALS:
                rejection = rejection_json(eid, etype, None, reason, named)
            else:
                template = _REJECTION[etype, reason]
                rejection = (template % (eid.encode(), item.encode()) if item is not None
                             else template % eid.encode())
            rejected = (*rejected, rejection)[-REJECTIONS_KEPT:]
            if status != CHECKED_OUT:  # an order's rejections are frozen with it
                cart_rejected = (*cart_rejected, rejection)[-REJECTIONS_KEPT:]
    version, last = state.version + 1, (eid, partition, offset)
    if status != CHECKED_OUT:
        order = None
    elif order is None:  # this event is the checkout: the order keeps its version and time
        order = (version, last, occurred_at)
    return CustomerState(state.customer_id, generation, status, lines, version, last, rejected,
                         (window + eid_bytes)[-_WINDOW_BYTES:], occurred_at, cart_rejected,
                         order), outcome


# The record's layout, as orjson writes `cart_contract.cart_details_to_dict` (compact, in this
# key order). Only values that cannot need escaping go in raw: ids match cart_contract.ID_RE,
# eventIds are canonical UUIDs, statuses and numbers are plain; names sit in the lines' JSON,
# rejections are kept as JSON, and updatedAt (free text) goes through orjson.
_RECORD = (b'{"customerId":"%s","cartId":"%s:%d","status":"%s","lineItems":[%s],"totalQty":%d,'
           b'"totalPrice":"%s","version":%d,"lastEvent":{"eventId":"%s","partition":%d,'
           b'"offset":%d},"rejected":[%s],"updatedAt":%s,"customer":{"version":%d,'
           b'"lastEvent":{"eventId":"%s","partition":%d,"offset":%d},"rejected":[%s],'
           b'"updatedAt":%s},"schemaVersion":1}')
# Generation 0 (nothing accepted yet) is shown as an empty open cart.
_STATUS = {None: OPEN.encode(), OPEN: OPEN.encode(), CHECKED_OUT: CHECKED_OUT.encode()}


def encode_state(s: CustomerState) -> bytes:
    """The cart-details record of a state (cart_contract.encode_cart_details's bytes)."""
    lines = s.lines
    qty = cents = 0
    parts = []
    try:
        for li in lines:
            qty += li.qty
            cents += li.cents  # None (not whole cents): TypeError
            parts.append(li.json)
        if cents >= _MAX_TOTAL_CENTS:
            raise TypeError
        total = b"%d.%02d" % divmod(cents, 100)
    except TypeError:
        qty, exact, parts = 0, _ZERO, []
        for li in lines:
            qty += li.qty
            exact += li.total_price
            parts.append(li.json)
        total = _money(exact).encode()
    cid_bytes, last = s.customer_id.encode(), s.last_event
    eid, updated = last[0].encode(), orjson.dumps(s.updated_at)
    rejected = b",".join(s.rejected)
    if s.order is None:  # a live cart moves with the customer
        cart_version, cart_eid, cart_last, cart_updated = s.version, eid, last, updated
    else:
        cart_version, cart_last, at = s.order
        cart_eid, cart_updated = cart_last[0].encode(), orjson.dumps(at)
    return _RECORD % (
        cid_bytes, cid_bytes, s.generation, _STATUS[s.status], b",".join(parts), qty, total,
        cart_version, cart_eid, cart_last[1], cart_last[2],
        b",".join(s.cart_rejected), cart_updated,
        s.version, eid, last[1], last[2], rejected, updated)


# ------------------------------------------------------------------------------ snapshots
# bytewax pickles every changed customer's snapshot at each epoch; plain tuples of str/int/bytes
# pickle several times faster than NamedTuples or dataclasses (which pickle a class reference).
# The snapshot is `SavedFold`'s layout, its state `CustomerState`'s with lines as `SavedLine`s.


class SavedFold(NamedTuple):
    """What the fold stage snapshots per customer (as a plain tuple of this layout)."""

    state: tuple[Any, ...] | None  # CustomerState's fields, lines as SavedLine tuples
    waiting: tuple[Wire, ...]  # events held behind the first one's awaited answer
    answers: tuple[tuple[int, Any], ...]  # answers that came before their event: (offset, answer)


def fields_of(cls: type) -> tuple[str, ...]:
    """The field names of a NamedTuple or a msgspec Struct, in order."""
    if issubclass(cls, msgspec.Struct):
        return cls.__struct_fields__
    return cls._fields  # type: ignore[attr-defined]


def shape_of(*classes: Any) -> str:
    """A fingerprint of classes' names and fields (and of the field lists given as tuples)."""
    parts = [(c.__name__, fields_of(c)) if isinstance(c, type) else c for c in classes]
    return f"{zlib.crc32(repr(parts).encode()):08x}"


# Everything a snapshot's layout depends on: a change here changes the flow's STATE_FORMAT, so
# recovery state of another shape is never unpickled into this one.
SHAPE = shape_of(SavedFold, CustomerState, SavedLine, WIRE_FIELDS, PRODUCT_FIELDS)


def to_snapshot(s: CustomerState) -> tuple[Any, ...]:
    """The state as a snapshot holds it: a plain tuple of its fields, lines as `SavedLine`s."""
    return (s.customer_id, s.generation, s.status, tuple([li.saved for li in s.lines]), s.version,
            s.last_event, s.rejected, s.recent_event_ids, s.updated_at, s.cart_rejected, s.order)


def from_snapshot(t: tuple[Any, ...], cache: LineCache) -> CustomerState:
    """A state back from `to_snapshot`, its lines shared through `cache`."""
    (cid, generation, status, lines, version, last, rejected, window, updated_at, cart_rejected,
     order) = t
    return CustomerState(
        cid, generation, status,
        tuple([cache.get(li.item_id, li.item_name, li.unit_price, li.qty, li.added_price)
               for li in map(SavedLine._make, lines)]),
        version, None if last is None else tuple(last), tuple(rejected[-REJECTIONS_KEPT:]),
        window[-_WINDOW_BYTES:], updated_at, tuple(cart_rejected[-REJECTIONS_KEPT:]),
        None if order is None else (order[0], tuple(order[1]), order[2]))
