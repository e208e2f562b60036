"""Cart details on `cart-details-event`: the aggregator's per-customer cart, keyed by customerId."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import msgspec
import orjson

from cart_contract._json import (
    as_list,
    as_object,
    decimal_string,
    integer,
    load_object,
    optional_text,
    require,
    schema_version,
    text,
)
from cart_contract.errors import ContractError
from cart_contract.ids import parse_id

OPEN = "OPEN"
CHECKED_OUT = "CHECKED_OUT"
_CENT = Decimal("0.01")


def money(d: Decimal) -> Decimal:
    """Round an amount to cents (banker's rounding)."""
    # Positional: Decimal's keyword parsing costs more than the rounding (~7 calls a record).
    return d.quantize(_CENT, ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class LineItem:
    """One product line of a cart."""

    item_id: str
    item_name: str
    qty: int
    unit_price: Decimal
    total_price: Decimal
    # An order's line whose catalog price at checkout differs from the price it was added at:
    # the price it was added at (the line shows `priceChanged: true` and `addedPrice`).
    added_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A cart event the fold refused, and why."""

    event_id: str
    type: str
    item_id: str | None
    reason: str
    # The products a checkout was refused for (OUT_OF_STOCK, PRODUCT_UNAVAILABLE); shown as
    # `itemIds` only when not empty.
    item_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventPosition:
    """Where a cart event sits in the log."""

    event_id: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class CustomerView:
    """The customer's side of a record: it advances with every event read, even when the cart
    shown is a frozen order (a rejection after checkout changes only this)."""

    version: int
    last_event: EventPosition
    rejected: tuple[Rejection, ...]
    updated_at: str


@dataclass(frozen=True, slots=True)
class CartDetails:
    """A customer's current cart (the open one, or the last order) after the last event read.

    The top level is the cart's own: an order's lines, totals, version, lastEvent, rejections and
    updatedAt never change after its checkout. `customer` is where the customer is now (None in
    records written before it existed: then the cart's fields are the customer's).
    """

    customer_id: str
    cart_id: str
    status: str
    line_items: tuple[LineItem, ...]
    total_qty: int
    total_price: Decimal
    version: int
    last_event: EventPosition
    rejected: tuple[Rejection, ...]
    updated_at: str
    schema_version: int = 1
    customer: CustomerView | None = None

    @property
    def customer_version(self) -> int:
        """The customer's version: the Redis guard, the ETag, what If-Match is compared with."""
        return self.version if self.customer is None else self.customer.version

    @property
    def customer_event(self) -> EventPosition:
        """The customer's last event read (what minOffset waits for)."""
        return self.last_event if self.customer is None else self.customer.last_event

    @property
    def generation(self) -> int:
        """The cart's generation, the number after the last ':' of cartId."""
        return int(self.cart_id.rsplit(":", 1)[1])


def _position(p: EventPosition) -> dict[str, Any]:
    return {"eventId": p.event_id, "partition": p.partition, "offset": p.offset}


def _line_to_dict(li: LineItem) -> dict[str, Any]:
    d: dict[str, Any] = {
        "itemId": li.item_id,
        "itemName": li.item_name,
        "qty": li.qty,
        "unitPrice": str(money(li.unit_price)),
        "totalPrice": str(money(li.total_price)),
    }
    if li.added_price is not None:
        d["priceChanged"] = True
        d["addedPrice"] = str(money(li.added_price))
    return d


def _rejection_to_dict(r: Rejection) -> dict[str, Any]:
    d: dict[str, Any] = {"eventId": r.event_id, "type": r.type, "itemId": r.item_id,
                         "reason": r.reason}
    if r.item_ids:
        d["itemIds"] = list(r.item_ids)
    return d


def _rejections(rejected: tuple[Rejection, ...]) -> list[dict[str, Any]]:
    return [_rejection_to_dict(r) for r in rejected]


def cart_details_to_dict(c: CartDetails) -> dict[str, Any]:
    """The record's wire form; money as strings with two decimals."""
    d = _cart_dict(c)
    if c.customer is not None:
        d["customer"] = {"version": c.customer.version,
                         "lastEvent": _position(c.customer.last_event),
                         "rejected": _rejections(c.customer.rejected),
                         "updatedAt": c.customer.updated_at}
    d["schemaVersion"] = c.schema_version
    return d


def cart_only_dict(c: CartDetails) -> dict[str, Any]:
    """The cart's own part of the record (no `customer`): what an order row keeps for ever."""
    d = _cart_dict(c)
    d["schemaVersion"] = c.schema_version
    return d


def _cart_dict(c: CartDetails) -> dict[str, Any]:
    return {
        "customerId": c.customer_id,
        "cartId": c.cart_id,
        "status": c.status,
        "lineItems": [_line_to_dict(li) for li in c.line_items],
        "totalQty": c.total_qty,
        "totalPrice": str(money(c.total_price)),
        "version": c.version,
        "lastEvent": _position(c.last_event),
        "rejected": _rejections(c.rejected),
        "updatedAt": c.updated_at,
    }


def encode_cart_details(c: CartDetails) -> bytes:
    """Serialise cart details to JSON bytes."""
    return orjson.dumps(cart_details_to_dict(c))


def encode_cart_only(c: CartDetails) -> bytes:
    """The cart's own part as JSON bytes (`cart_only_dict`)."""
    return orjson.dumps(cart_only_dict(c))


def _line_item(value: Any) -> LineItem:
    d = as_object(value, "lineItems")
    return LineItem(
        item_id=parse_id(require(d, "itemId"), "itemId"),
        item_name=text(d, "itemName"),
        qty=integer(d, "qty", 1),
        unit_price=decimal_string(d, "unitPrice"),
        total_price=decimal_string(d, "totalPrice"),
        # Tolerant: records before stock at checkout have neither field.
        added_price=decimal_string(d, "addedPrice") if d.get("addedPrice") is not None
        else None,
    )


def _rejection(value: Any) -> Rejection:
    d = as_object(value, "rejected")
    return Rejection(
        event_id=text(d, "eventId"),
        type=text(d, "type"),
        item_id=optional_text(d, "itemId"),
        reason=text(d, "reason"),
        item_ids=tuple(parse_id(i, "itemIds") for i in as_list(d.get("itemIds", []), "itemIds")),
    )


def _cart_id(d: dict[str, Any], customer_id: str) -> str:
    cart_id = text(d, "cartId", 200)
    owner, sep, generation = cart_id.rpartition(":")
    if not sep or owner != customer_id or not generation.isdigit():
        raise ContractError("WRONG_TYPE", "cartId must be '<customerId>:<generation>'", "cartId")
    return cart_id


def cart_details_from_dict(d: dict[str, Any]) -> CartDetails:
    """Read cart details from the wire form; unknown fields are ignored. Raises ContractError."""
    customer_id = parse_id(require(d, "customerId"), "customerId")
    status = require(d, "status")
    if status not in (OPEN, CHECKED_OUT):
        raise ContractError("WRONG_TYPE", f"status must be {OPEN} or {CHECKED_OUT}", "status")
    last = as_object(require(d, "lastEvent"), "lastEvent")
    customer = None
    if d.get("customer") is not None:
        cd = as_object(d["customer"], "customer")
        clast = as_object(require(cd, "lastEvent"), "customer.lastEvent")
        customer = CustomerView(
            version=integer(cd, "version"),
            last_event=_event_position(clast),
            rejected=tuple(_rejection(r) for r in as_list(cd.get("rejected", []), "rejected")),
            updated_at=text(cd, "updatedAt"),
        )
    return CartDetails(
        customer_id=customer_id,
        cart_id=_cart_id(d, customer_id),
        status=status,
        line_items=tuple(_line_item(li) for li in as_list(require(d, "lineItems"), "lineItems")),
        total_qty=integer(d, "totalQty"),
        total_price=decimal_string(d, "totalPrice"),
        version=integer(d, "version"),
        last_event=_event_position(last),
        rejected=tuple(_rejection(r) for r in as_list(d.get("rejected", []), "rejected")),
        updated_at=text(d, "updatedAt"),
        schema_version=schema_version(d),
        customer=customer,
    )


def _event_position(last: dict[str, Any]) -> EventPosition:
    return EventPosition(
        event_id=text(last, "eventId"),
        partition=integer(last, "partition"),
        offset=integer(last, "offset"),
    )


# The fast reader: msgspec reads the aggregator's own form, every check it can make in C (as
# strict as the general path or stricter); whatever it refuses goes through the general path,
# which alone decides errors and unusual records (tests/unit/test_contract_cart_details.py
# compares the two). As in events.py: unknown fields are refused, not skipped (msgspec skips a
# value without the checks orjson makes), and integers are bounded to what orjson reads as ints.
_Int = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Qty = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
_Version = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
# ids.ID_RE, anchored with \Z: msgspec searches, and `$` also matches before a final newline.
_Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:@-]{1,64}\Z")]


class _WirePosition(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    eventId: _Text
    partition: _Int
    offset: _Int


class _WireRejection(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    eventId: _Text
    type: _Text
    reason: _Text
    itemId: _Text | None = None
    itemIds: tuple[_Id, ...] = ()


class _WireLine(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    itemId: _Id
    itemName: _Text
    qty: _Qty
    unitPrice: str
    totalPrice: str
    priceChanged: bool | None = None  # written beside addedPrice; the readers ignore it
    addedPrice: str | None = None


class _WireCustomer(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    version: _Int
    lastEvent: _WirePosition
    updatedAt: _Text
    rejected: tuple[_WireRejection, ...] = ()


class _WireCart(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    customerId: _Id
    cartId: _Text
    status: Literal["OPEN", "CHECKED_OUT"]
    lineItems: tuple[_WireLine, ...]
    totalQty: _Int
    totalPrice: str
    version: _Int
    lastEvent: _WirePosition
    updatedAt: _Text
    rejected: tuple[_WireRejection, ...] = ()
    schemaVersion: _Version = 1
    customer: _WireCustomer | None = None


_decode_wire = msgspec.json.Decoder(_WireCart).decode


def _amount(value: str) -> Decimal:
    amount = Decimal(value)  # InvalidOperation: the general path says why
    if not amount.is_finite():
        raise InvalidOperation(value)
    return amount


def _position_of(p: _WirePosition) -> EventPosition:
    return EventPosition(p.eventId, p.partition, p.offset)


def _rejections_of(rs: tuple[_WireRejection, ...]) -> tuple[Rejection, ...]:
    return tuple(Rejection(r.eventId, r.type, r.itemId, r.reason, r.itemIds) for r in rs)


def _fast_cart_details(raw: bytes | str) -> CartDetails | None:
    """The record in the aggregator's form, or None for the general path to decide."""
    try:
        w = _decode_wire(raw)
        owner, sep, generation = w.cartId.rpartition(":")
        if not sep or owner != w.customerId or not generation.isdigit():
            return None
        lines = tuple(LineItem(li.itemId, li.itemName, li.qty, _amount(li.unitPrice),
                               _amount(li.totalPrice),
                               None if li.addedPrice is None else _amount(li.addedPrice))
                      for li in w.lineItems)
        total = _amount(w.totalPrice)
    except Exception:  # noqa: BLE001 - bad JSON, UTF-8, type, money...: the general path says
        return None
    c = w.customer
    customer = None if c is None else CustomerView(
        c.version, _position_of(c.lastEvent), _rejections_of(c.rejected), c.updatedAt)
    return CartDetails(w.customerId, w.cartId, w.status, lines, w.totalQty, total, w.version,
                       _position_of(w.lastEvent), _rejections_of(w.rejected), w.updatedAt,
                       w.schemaVersion, customer)


def decode_cart_details(raw: bytes | str) -> CartDetails:
    """Parse cart details from JSON bytes; raises ContractError."""
    # Once per record in every cart sink: the msgspec path costs a fraction of orjson + dict
    # walking; what it does not accept, the general path reads (and refuses with its reason).
    cls = type(raw)
    if cls is bytes or cls is str:  # msgspec reads bytes subclasses orjson refuses
        cart = _fast_cart_details(raw)
        if cart is not None:
            return cart
    return cart_details_from_dict(load_object(raw))
