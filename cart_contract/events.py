"""Cart events: the facts on `cart-events`, keyed by customerId.

An event records that the write API accepted a command (AddItem, RemoveItem, Checkout, ClearCart)
into the log; the names here (ITEM_ADDED …) are the wire names of the events. What an event does
to the cart is the fold's decision: it may reject it (a Rejection in the cart details).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec
import orjson

from cart_contract._json import load_object, require, schema_version
from cart_contract.errors import ContractError
from cart_contract.ids import ID_RE, QTY_MAX, QTY_MIN, parse_id, parse_qty

SCHEMA_VERSION = 1


class EventType(StrEnum):
    """The kind of a cart event, as written on the wire; one per kind of command."""

    ITEM_ADDED = "ITEM_ADDED"
    ITEM_REMOVED = "ITEM_REMOVED"
    CHECKOUT = "CHECKOUT"
    CART_CLEARED = "CART_CLEARED"


# Names written by the Java original; read, never written.
_LEGACY_TYPES = {
    "ADD_ITEM": EventType.ITEM_ADDED,
    "REMOVE_ITEM": EventType.ITEM_REMOVED,
    "CLEAR_CART": EventType.CART_CLEARED,
}
# Every name the reader accepts: one dict lookup per event instead of EventType(value).
_TYPES_BY_NAME = {**{t.value: t for t in EventType}, **_LEGACY_TYPES}
# The canonical form every writer uses; only other spellings pay for uuid.UUID().
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class CartEvent:
    """One event in the log: a command the write API accepted, with its id and time."""

    event_id: str
    type: EventType
    customer_id: str
    item_id: str | None
    qty: int | None
    occurred_at: str
    schema_version: int = SCHEMA_VERSION
    # The command's If-Match: the customer version it was decided on (None: no condition).
    expected_version: int | None = None


def utc_now_iso() -> str:
    """The current time as ISO-8601 UTC with a Z suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_cart_event(
    type: EventType,
    customer_id: str,
    item_id: str | None = None,
    qty: int | None = None,
    event_id: str | None = None,
    occurred_at: str | None = None,
    expected_version: int | None = None,
) -> CartEvent:
    """Build a valid event (random eventId, current time when not given); raises ContractError."""
    # Built through the reader, so a writer can never publish an event the readers refuse,
    # and encode -> decode gives back exactly this event.
    return cart_event_from_dict(
        {
            "eventId": event_id or str(uuid.uuid4()),
            "type": type,
            "customerId": customer_id,
            "itemId": item_id,
            "qty": qty,
            "occurredAt": occurred_at or utc_now_iso(),
            "expectedVersion": expected_version,
        }
    )


def cart_event_to_dict(ev: CartEvent) -> dict[str, Any]:
    """The event's wire form (camelCase, optional fields omitted)."""
    d: dict[str, Any] = {
        "schemaVersion": ev.schema_version,
        "eventId": ev.event_id,
        "type": ev.type.value,
        "customerId": ev.customer_id,
    }
    if ev.item_id is not None:
        d["itemId"] = ev.item_id
    if ev.qty is not None:
        d["qty"] = ev.qty
    d["occurredAt"] = ev.occurred_at
    if ev.expected_version is not None:
        d["expectedVersion"] = ev.expected_version
    return d


def encode_cart_event(ev: CartEvent) -> bytes:
    """Serialise an event to JSON bytes."""
    return orjson.dumps(cart_event_to_dict(ev))


def _event_type(value: Any) -> EventType:
    if not isinstance(value, str):
        raise ContractError("WRONG_TYPE", "type must be a string", "type")
    etype = _TYPES_BY_NAME.get(value)
    if etype is None:
        raise ContractError("UNKNOWN_EVENT_TYPE", f"unknown event type {value!r}", "type")
    return etype


def _event_id(value: Any) -> str:
    if not isinstance(value, str):
        raise ContractError("WRONG_TYPE", "eventId must be a string", "eventId")
    if _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ContractError("INVALID_ID", "eventId must be a UUID", "eventId") from None


def _timestamp(value: Any) -> str:
    if not isinstance(value, str):
        raise ContractError("WRONG_TYPE", "occurredAt must be an ISO-8601 string", "occurredAt")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ContractError("WRONG_TYPE", "occurredAt is not ISO-8601", "occurredAt") from None
    return value


# What `cart_event_fields` returns: CartEvent's fields in declaration order.
CartEventFields = tuple[str, EventType, str, str | None, int | None, str, int, int | None]


def _expected_version(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ContractError("WRONG_TYPE", "expectedVersion must be an integer >= 0",
                            "expectedVersion")
    return value


def _checked_fields(d: dict[str, Any]) -> CartEventFields:
    """Every check, in the order that decides which error a bad record gets."""
    etype = _event_type(require(d, "type", "eventType"))
    item_id = qty = None
    if etype in (EventType.ITEM_ADDED, EventType.ITEM_REMOVED):
        item_id = parse_id(require(d, "itemId"), "itemId")
        if etype is EventType.ITEM_ADDED:
            qty = parse_qty(require(d, "qty"))
        elif d.get("qty") is not None:
            qty = parse_qty(d["qty"])
    return (
        _event_id(require(d, "eventId")),
        etype,
        parse_id(require(d, "customerId"), "customerId"),
        item_id,
        qty,
        _timestamp(require(d, "occurredAt")),
        schema_version(d),
        _expected_version(d.get("expectedVersion")),
    )


# Ids that matched ID_RE: customers and items recur, and a set lookup costs a tenth of the match.
_VALID_IDS: set[str] = set()
_VALID_IDS_MAX = 100_000


def _valid_id(value: str) -> bool:
    if value in _VALID_IDS:
        return True
    if not ID_RE.fullmatch(value):
        return False
    if len(_VALID_IDS) >= _VALID_IDS_MAX:
        _VALID_IDS.clear()  # bounded; the ids in use come back on their own
    _VALID_IDS.add(value)
    return True


_canonical_uuid = _CANONICAL_UUID.fullmatch
# Module names: `EventType.ITEM_ADDED` is a metaclass lookup, ~130 ns, twice per event.
_ITEM_ADDED, _ITEM_REMOVED = EventType.ITEM_ADDED, EventType.ITEM_REMOVED


def _plain_fields(t: str, eid: str, cid: str, item_id: str | None, qty: int | None, at: str,
                  sv: int, expected: int | None) -> CartEventFields | None:
    """The fields of an event in the writers' own form, or None to take `_checked_fields`.

    The caller has checked the types: str t, eid, cid and at, int sv, item_id a str or None,
    qty and expected ints or None. It accepts a subset of what `_checked_fields` accepts and
    returns the same values for it (tests/unit/test_contract.py checks both on generated
    records): this runs once per event read, and the general checks cost about twice as much.
    """
    etype = _TYPES_BY_NAME.get(t)
    if (etype is None or not _canonical_uuid(eid) or not (cid in _VALID_IDS or _valid_id(cid))
            or sv < 1 or (expected is not None and expected < 0)):
        return None
    if etype is _ITEM_ADDED or etype is _ITEM_REMOVED:
        if item_id is None or not (item_id in _VALID_IDS or _valid_id(item_id)):
            return None
        if qty is None:
            if etype is _ITEM_ADDED:
                return None
        elif not QTY_MIN <= qty <= QTY_MAX:
            return None
    else:
        item_id = qty = None
    try:
        datetime.fromisoformat(at)
    except ValueError:
        return None
    return eid, etype, cid, item_id, qty, at, sv, expected


def _fast_fields(d: dict[str, Any]) -> CartEventFields | None:
    """`_plain_fields` of an event read as a dict (None: take `_checked_fields`)."""
    t, eid, cid, at = d.get("type"), d.get("eventId"), d.get("customerId"), d.get("occurredAt")
    sv, expected = d.get("schemaVersion", 1), d.get("expectedVersion")
    if (type(t) is not str or type(eid) is not str or type(cid) is not str
            or type(at) is not str or type(sv) is not int
            or (expected is not None and type(expected) is not int)):
        return None
    item_id, qty = d.get("itemId"), d.get("qty")
    # Of another type, they fail an add's or a remove's checks and are ignored otherwise:
    # no itemId, and qty 0 (out of range; None would read as "remove the whole line").
    return _plain_fields(t, eid, cid, item_id if type(item_id) is str else None,
                         qty if qty is None or type(qty) is int else 0, at, sv, expected)


def cart_event_fields(d: dict[str, Any]) -> CartEventFields:
    """An event's wire form checked as `cart_event_from_dict` does, as a tuple of its fields."""
    return _fast_fields(d) or _checked_fields(d)


def cart_event_from_dict(d: dict[str, Any]) -> CartEvent:
    """Read an event from its wire form; unknown fields (and itemId/qty where unused) ignored."""
    return CartEvent(*cart_event_fields(d))


# Every integer msgspec accepts here orjson reads as the same int. Unbounded, msgspec would
# read 2**64 (orjson: a float) or 10**400 (orjson: an error) as ints, even in a duplicate key
# that a later one overrides, and the fast path would accept what the general one refuses.
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An event in the writers' own form, as msgspec reads it for `decode_cart_event_fields`."""

    # Unknown fields are refused, not skipped: msgspec skips a value without checking what
    # orjson checks (invalid UTF-8, 1e400, nesting depth), so skipping could accept a record
    # orjson refuses. A record with extra fields takes the general path, which ignores them.
    type: str
    eventId: str
    customerId: str
    occurredAt: str
    itemId: str | None = None
    qty: _Int64 | None = None
    schemaVersion: _Int64 = 1
    expectedVersion: _Int64 | None = None


_decode_wire = msgspec.json.Decoder(_WireEvent).decode


def _decode_full(raw: bytes | str) -> CartEventFields:
    """The general path: orjson and every check; alone decides errors and unusual records."""
    return cart_event_fields(load_object(raw))


def decode_cart_event_fields(raw: bytes | str) -> CartEventFields:
    """Parse an event from JSON bytes into CartEvent's fields (no object); raises ContractError."""
    # Once per record in the aggregator: msgspec plus `_plain_fields` cost ~0.6x orjson + dict
    # + `_fast_fields`. Whatever they do not accept goes through `_decode_full`,
    # so results, errors included, are its own (tests/unit/test_contract.py compares the two).
    cls = type(raw)
    if cls is not bytes and cls is not str:  # msgspec reads bytes subclasses orjson refuses
        return _decode_full(raw)
    try:
        ev = _decode_wire(raw)
    except Exception:  # bad JSON, UTF-8, JSON type, unknown field...: the general path says which
        return _decode_full(raw)
    fields = _plain_fields(ev.type, ev.eventId, ev.customerId, ev.itemId, ev.qty, ev.occurredAt,
                           ev.schemaVersion, ev.expectedVersion)
    return fields if fields is not None else _decode_full(raw)


def decode_cart_event(raw: bytes | str) -> CartEvent:
    """Parse an event from JSON bytes; raises ContractError."""
    return CartEvent(*decode_cart_event_fields(raw))
