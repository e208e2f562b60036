"""A readable model of the cart's rules: the oracle the aggregator's fold is tested against.

`cart_aggregator.fold` is the production fold (flat NamedTuples, ready-made JSON, tuned for
speed). This model applies the same rules to objects (`cart_contract` LineItems, Rejections,
EventPositions, Decimals) and publishes with `cart_contract.encode_cart_details`; tests check
that both give byte-identical records and equal states on generated logs. The rules (dedupe
window, rejections kept, what each event does) are documented in `cart_aggregator.fold`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, NamedTuple

from cart_aggregator.fold import (
    CART_LIMIT,
    DEDUPE_WINDOW,
    EMPTY_CART,
    INSUFFICIENT_STOCK,
    NO_OPEN_CART,
    NOT_IN_CART,
    OUT_OF_STOCK,
    PRODUCT_UNAVAILABLE,
    REJECTIONS_KEPT,
    RESERVED,
    UNKNOWN_PRODUCT,
    VERSION_CONFLICT,
    rejection_json,
)
from cart_contract import (
    CHECKED_OUT,
    OPEN,
    CartDetails,
    CartEvent,
    CustomerView,
    EventPosition,
    EventType,
    LineItem,
    Product,
    Rejection,
    money,
)
from cart_contract.limits import LINE_QTY_MAX, LINES_MAX

_UUID_LEN = 16
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class CustomerState:
    """Everything the fold needs to know about one customer."""

    customer_id: str
    generation: int = 0
    status: str | None = None
    lines: tuple[LineItem, ...] = ()
    version: int = 0
    last_event: EventPosition | None = None
    rejected: tuple[Rejection, ...] = ()
    recent_event_ids: bytes = b""
    updated_at: str = ""
    # The rejections of the current cart only (the customer's are `rejected`).
    cart_rejected: tuple[Rejection, ...] = ()
    # Once checked out: the order's own (version, lastEvent, updatedAt), never to change again.
    order: tuple[int, EventPosition, str] | None = None

    @property
    def is_open(self) -> bool:
        """Whether the customer has an open cart."""
        return self.status == OPEN


class _Cart(NamedTuple):
    """The part of a CustomerState an event's rules decide (a tuple: cheap to build)."""

    generation: int
    status: str | None
    lines: tuple[LineItem, ...]


def _id_bytes(event_id: str) -> bytes:
    """An eventId as 16 bytes."""
    return uuid.UUID(event_id).bytes


def _seen(window: bytes, eid: bytes) -> int:
    """The slot index of `eid` in the window, -1 when absent."""
    i = window.find(eid)
    # A match must start on a slot boundary, not straddle two ids.
    while i != -1 and i % _UUID_LEN:
        i = window.find(eid, i + 1)
    return -1 if i == -1 else i // _UUID_LEN


def _remember(window: bytes, eid: bytes, slot: int = -1) -> bytes:
    """The window with `eid` at its recent end (moved there when already at `slot`)."""
    if slot >= 0:
        window = window[: slot * _UUID_LEN] + window[(slot + 1) * _UUID_LEN :]
    return (window + eid)[-DEDUPE_WINDOW * _UUID_LEN :]


def _line(product: Product, qty: int) -> LineItem:
    # Id, name and price are the catalog entry's own objects: shared, not copied per cart.
    return LineItem(
        item_id=product.product_id,
        item_name=product.product_name,
        qty=qty,
        unit_price=product.price,
        total_price=product.price * qty,
    )


def _add(state: CustomerState, event: CartEvent, product: Product | None) -> _Cart | str:
    if product is None:
        return UNKNOWN_PRODUCT
    assert event.qty is not None and event.item_id is not None
    lines = state.lines if state.is_open else ()
    current = next((li for li in lines if li.item_id == event.item_id), None)
    qty = (current.qty if current else 0) + event.qty
    # A cart holds at most LINES_MAX lines of at most LINE_QTY_MAX units each.
    if qty > LINE_QTY_MAX or (current is None and len(lines) >= LINES_MAX):
        return CART_LIMIT
    if qty > product.stock_qty:
        return INSUFFICIENT_STOCK
    if current is None:
        new_lines = (*lines, _line(product, qty))
    else:
        # The whole line takes the catalog's name and price as of this event.
        new_lines = tuple(_line(product, qty) if li is current else li for li in lines)
    if state.is_open:
        return _Cart(state.generation, OPEN, new_lines)
    return _Cart(state.generation + 1, OPEN, new_lines)


def _remove(state: CustomerState, event: CartEvent) -> _Cart | str:
    current = next((li for li in state.lines if li.item_id == event.item_id), None)
    if not state.is_open or current is None:
        return NOT_IN_CART
    if event.qty is None or event.qty >= current.qty:
        lines = tuple(li for li in state.lines if li is not current)
    else:
        qty = current.qty - event.qty
        shrunk = LineItem(current.item_id, current.item_name, qty, current.unit_price,
                          current.unit_price * qty)
        lines = tuple(shrunk if li is current else li for li in state.lines)
    return _Cart(state.generation, OPEN, lines)


class _Refusal(NamedTuple):
    """A checkout refused by the reservation stage, and the products it names."""

    reason: str
    item_ids: tuple[str, ...]


def _decide(state: CustomerState, event: CartEvent, product: Any) -> _Cart | str | _Refusal:
    """The customer's cart after the event, or the reason the event is rejected."""
    # If-Match: a command decided on another version of the customer changes nothing.
    if event.expected_version is not None and event.expected_version != state.version:
        return VERSION_CONFLICT
    match event.type:
        case EventType.ITEM_ADDED:
            return _add(state, event, product)
        case EventType.ITEM_REMOVED:
            return _remove(state, event)
        case EventType.CART_CLEARED:
            return _Cart(state.generation, OPEN, ()) if state.is_open else NO_OPEN_CART
        case EventType.CHECKOUT:
            if not state.is_open:
                return NO_OPEN_CART
            if not state.lines:
                return EMPTY_CART
            # The reservation stage's answer: the order's lines priced at checkout, or why not.
            assert product is not None, "a checkout of an open cart needs its answer"
            verdict, detail = product  # type: ignore[misc]
            if verdict != RESERVED:
                return _Refusal(verdict, tuple(detail))
            added = {li.item_id: li.unit_price for li in state.lines}
            order = []
            for item_id, name, qty, price in detail:
                unit = Decimal(price)
                before = added.get(item_id)
                order.append(LineItem(item_id, name, qty, unit, unit * qty,
                                      before if before is not None and before != unit else None))
            return _Cart(state.generation, CHECKED_OUT, tuple(order))
    raise AssertionError(f"unhandled event type {event.type}")


def apply(
    state: CustomerState | None,
    event: CartEvent,
    product: Product | None,
    position: EventPosition,
) -> CustomerState:
    """Apply one cart event (with the catalog entry for its item as of this event)."""
    if state is None:
        state = CustomerState(customer_id=event.customer_id)
    eid = _id_bytes(event.event_id)
    slot = _seen(state.recent_event_ids, eid)
    # A duplicate changes no cart; otherwise the rules decide (a new cart, or a rejection).
    cart = _Cart(state.generation, state.status, state.lines)
    outcome = cart if slot >= 0 else _decide(state, event, product)
    rejected, cart_rejected = state.rejected, state.cart_rejected
    if isinstance(outcome, str | _Refusal):
        reason, named = (outcome, ()) if isinstance(outcome, str) else outcome
        rejection = Rejection(event.event_id, event.type.value, event.item_id, reason, named)
        rejected = (*rejected, rejection)[-REJECTIONS_KEPT:]
        outcome = cart
        # An order's rejections stay as they were at checkout.
        if outcome.status != CHECKED_OUT:
            cart_rejected = (*cart_rejected, rejection)[-REJECTIONS_KEPT:]
    elif outcome.generation != state.generation:
        cart_rejected = ()  # a new cart starts without rejections
    version = state.version + 1
    order = None
    if outcome.status == CHECKED_OUT:
        order = state.order or (version, position, event.occurred_at)
    return CustomerState(
        state.customer_id,
        outcome.generation,
        outcome.status,
        outcome.lines,
        state.version + 1,
        position,
        rejected,
        _remember(state.recent_event_ids, eid, slot),
        event.occurred_at,
        cart_rejected,
        order,
    )


def to_cart_details(state: CustomerState) -> CartDetails:
    """The record the aggregator publishes for this state."""
    assert state.last_event is not None, "a state is published only after an event"
    total_qty, total_price = 0, _ZERO
    for li in state.lines:
        total_qty += li.qty
        total_price += li.total_price
    # Positional (fields in declaration order): this runs once per event.
    return CartDetails(
        state.customer_id,
        f"{state.customer_id}:{state.generation}",
        # Generation 0 (nothing accepted yet) is shown as an empty open cart.
        state.status or OPEN,
        state.lines,
        total_qty,
        money(total_price),
        # A live cart moves with the customer; an order keeps its checkout's.
        *(state.order or (state.version, state.last_event, state.updated_at))[:2],
        state.cart_rejected,
        state.order[2] if state.order else state.updated_at,
        1,
        CustomerView(state.version, state.last_event, state.rejected, state.updated_at),
    )


def needs_answer(state: CustomerState | None, event: CartEvent) -> bool:
    """A checkout of an open cart with lines, not a repeat nor a version conflict: the
    reservation decides."""
    return (event.type is EventType.CHECKOUT and state is not None and state.is_open
            and bool(state.lines)
            and (event.expected_version is None or event.expected_version == state.version)
            and _seen(state.recent_event_ids, _id_bytes(event.event_id)) < 0)


def reserved_as_added(state: CustomerState) -> tuple[str, Any]:
    """The answer of a reservation with stock to spare and prices unchanged since the adds."""
    return RESERVED, tuple((li.item_id, li.item_name, li.qty, str(li.unit_price))
                           for li in state.lines)


def answer_for(state: CustomerState | None, event: CartEvent,
               catalog_at: Callable[[CartEvent], Product | None],
               checkout_at: Callable[[CartEvent, CustomerState], Any] | None = None) -> Any:
    """What the fold gets with `event`: an add's product, a checkout's reservation, or None."""
    if event.type is EventType.ITEM_ADDED:
        return catalog_at(event)
    if state is not None and needs_answer(state, event):
        return (checkout_at or (lambda _e, s: reserved_as_added(s)))(event, state)
    return None


def fold(
    events: Iterable[tuple[CartEvent, EventPosition]],
    catalog_at: Callable[[CartEvent], Product | None],
    checkout_at: Callable[[CartEvent, CustomerState], Any] | None = None,
) -> dict[str, CustomerState]:
    """Fold a log into per-customer states; `catalog_at` gives each event's product,
    `checkout_at` each checkout's reservation answer (default: reserved as added)."""
    states: dict[str, CustomerState] = {}
    for event, position in events:
        before = states.get(event.customer_id)
        answer = answer_for(before, event, catalog_at, checkout_at)
        states[event.customer_id] = apply(before, event, answer, position)
    return states


class ReservationModel:
    """The reservation stage's rules, readably: the request log in order decides.

    `feed` takes the request topic's records as `cart_aggregator.reserve.decode_record` gives
    them; `answers` maps (customerId, checkout eventId) to the answer of its latest decided
    request (a client retry beyond the fold's dedupe window is a checkout of its own).
    """

    def __init__(self) -> None:
        self.stock: dict[str, Product | None] = {}
        self.reserved: dict[str, int] = {}
        self.answers: dict[tuple[str, str], tuple[str, Any]] = {}
        self.decided: set[tuple[str, str, int]] = set()

    def feed(self, record: tuple[Any, ...]) -> None:
        if record[0] == "product":
            # The latest forwarded record of a product is in force.
            _, pid, p, _ = record
            self.stock[pid] = None if p is None else Product(p[0], p[1], Decimal(p[2]), p[3])
            return
        cid, eid, offset, lines = record[1]
        if (cid, eid, offset) in self.decided:
            return  # a repeated request: the same checkout (eventId at its offset) again
        self.decided.add((cid, eid, offset))
        missing = tuple(i for i, _, _ in lines if self.stock.get(i) is None)
        short = tuple(i for i, q, _ in lines if self.stock.get(i) is not None
                      and self.reserved.get(i, 0) + q > self.stock[i].stock_qty)  # type: ignore
        if missing:
            self.answers[cid, eid] = (PRODUCT_UNAVAILABLE, missing)
        elif short:
            self.answers[cid, eid] = (OUT_OF_STOCK, short)
        else:
            for i, q, _ in lines:
                self.reserved[i] = self.reserved.get(i, 0) + q
            self.answers[cid, eid] = (RESERVED, tuple(
                (i, self.stock[i].product_name, q, str(self.stock[i].price))  # type: ignore
                for i, q, _ in lines))


def compact(state: CustomerState) -> CustomerState:
    """The state trimmed to what the fold needs; the next outputs stay identical.

    Every field shows up in a later record or decides a later outcome (a CHECKED_OUT cart's
    lines stay in its records until the next cart opens), so nothing can be dropped: this only
    re-applies the bounds, e.g. to a state restored from a snapshot taken with larger windows.
    """
    size = DEDUPE_WINDOW * _UUID_LEN
    if (len(state.recent_event_ids) <= size and len(state.rejected) <= REJECTIONS_KEPT
            and len(state.cart_rejected) <= REJECTIONS_KEPT):
        return state
    return replace(
        state,
        recent_event_ids=state.recent_event_ids[-size:],
        rejected=state.rejected[-REJECTIONS_KEPT:],
        cart_rejected=state.cart_rejected[-REJECTIONS_KEPT:],
    )


def saved(s: CustomerState) -> tuple[Any, ...]:
    """The state as the production fold snapshots it (`cart_aggregator.fold.to_snapshot`)."""
    last = s.last_event
    return (s.customer_id, s.generation, s.status,
            tuple((li.item_id, li.item_name, li.qty, str(li.unit_price), str(li.total_price),
                   None if li.added_price is None else str(li.added_price))
                  for li in s.lines),
            s.version, None if last is None else (last.event_id, last.partition, last.offset),
            tuple(rejection_json(r.event_id, r.type, r.item_id, r.reason, r.item_ids)
                  for r in s.rejected),
            s.recent_event_ids, s.updated_at,
            tuple(rejection_json(r.event_id, r.type, r.item_id, r.reason, r.item_ids)
                  for r in s.cart_rejected),
            None if s.order is None else (
                s.order[0], (s.order[1].event_id, s.order[1].partition, s.order[1].offset),
                s.order[2]))
