"""Cart details on `cart-details-event`: the aggregator's per-customer cart, keyed by customerId."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from cart_contract._json import integer, load_object, require, schema_version
from cart_contract.errors import ContractError

OPEN = "OPEN"
CHECKED_OUT = "CHECKED_OUT"
_CENT = Decimal("0.01")


def money(d: Decimal) -> Decimal:
    """Round an amount to cents (banker's rounding)."""
    return d.quantize(_CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class LineItem:
    """One product line of a cart."""

    item_id: str
    item_name: str
    qty: int
    unit_price: Decimal
    total_price: Decimal


@dataclass(frozen=True, slots=True)
class Rejection:
    """A cart event the fold refused, and why."""

    event_id: str
    type: str
    item_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class EventPosition:
    """Where a cart event sits in the log."""

    event_id: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class CartDetails:
    """A customer's current cart after the last cart event read."""

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

    @property
    def generation(self) -> int:
        """The cart's generation, the number after the last ':' of cartId."""
        return int(self.cart_id.rsplit(":", 1)[1])


def cart_details_to_dict(c: CartDetails) -> dict[str, Any]:
    """The record's wire form; money as strings with two decimals."""
    return {
        "customerId": c.customer_id,
        "cartId": c.cart_id,
        "status": c.status,
        "lineItems": [
            {
                "itemId": li.item_id,
                "itemName": li.item_name,
                "qty": li.qty,
                "unitPrice": str(money(li.unit_price)),
                "totalPrice": str(money(li.total_price)),
            }
            for li in c.line_items
        ],
        "totalQty": c.total_qty,
        "totalPrice": str(money(c.total_price)),
        "version": c.version,
        "lastEvent": {
            "eventId": c.last_event.event_id,
            "partition": c.last_event.partition,
            "offset": c.last_event.offset,
        },
        "rejected": [
            {"eventId": r.event_id, "type": r.type, "itemId": r.item_id, "reason": r.reason}
            for r in c.rejected
        ],
        "updatedAt": c.updated_at,
        "schemaVersion": c.schema_version,
    }


def encode_cart_details(c: CartDetails) -> bytes:
    """Serialise cart details to JSON bytes."""
    return orjson.dumps(cart_details_to_dict(c))


def cart_details_from_dict(d: dict[str, Any]) -> CartDetails:
    """Read cart details from the wire form; unknown fields are ignored."""
    last = require(d, "lastEvent")
    return CartDetails(
        customer_id=require(d, "customerId"),
        cart_id=require(d, "cartId"),
        status=require(d, "status"),
        line_items=tuple(
            LineItem(
                item_id=li["itemId"],
                item_name=li["itemName"],
                qty=li["qty"],
                unit_price=Decimal(li["unitPrice"]),
                total_price=Decimal(li["totalPrice"]),
            )
            for li in require(d, "lineItems")
        ),
        total_qty=integer(d, "totalQty"),
        total_price=Decimal(require(d, "totalPrice")),
        version=integer(d, "version"),
        last_event=EventPosition(last["eventId"], last["partition"], last["offset"]),
        rejected=tuple(
            Rejection(r["eventId"], r["type"], r.get("itemId"), r["reason"])
            for r in d.get("rejected", ())
        ),
        updated_at=require(d, "updatedAt"),
        schema_version=schema_version(d),
    )


def decode_cart_details(raw: bytes | str) -> CartDetails:
    """Parse cart details from JSON bytes; raises ContractError."""
    d = load_object(raw)
    try:
        return cart_details_from_dict(d)
    except (KeyError, TypeError, ArithmeticError) as exc:
        raise ContractError("WRONG_TYPE", f"malformed cart details: {exc!r}") from None
