"""Turning an HTTP request body into a command, with the contract's id and qty rules.

A request is a command (AddItem, RemoveItem, Checkout, ClearCart): a wish the write API
appends to `cart-events` as the event it asks for (ITEM_ADDED, ITEM_REMOVED, CHECKOUT,
CART_CLEARED, the wire names). Whether the cart changes is decided later by the fold, which may
reject the event; until then nothing has happened to the cart.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from cart_contract import ContractError, EventType, parse_id, parse_qty
from cart_write.errors import ApiError

# Fixed namespace so an Idempotency-Key maps to the same eventId in every process, forever.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c2a8e-3d5b-5c47-9a0e-2b7d4c1f8e93")
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_ENVIRON = "HTTP_IDEMPOTENCY_KEY"  # the header as a WSGI environ key
IDEMPOTENCY_KEY_MAX = 255
IF_MATCH_HEADER = "If-Match"
IF_MATCH_ENVIRON = "HTTP_IF_MATCH"
# One strong entity tag: the customer's version as the read API's ETag gives it, "<version>".
_IF_MATCH_RE = re.compile(r'^"(0|[1-9][0-9]{0,17})"$')
# Visible ASCII only: the key is echoed in logs and hashed as UTF-8, so keep it unambiguous.
_IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")

# Ids the read API's URLs cannot serve back: `.` and `..` are path segments that clients and
# proxies collapse, and a customer named like one of its static routes is shadowed by it.
UNSERVABLE_IDS = frozenset({".", ".."})
READ_API_ROUTES = frozenset({"carts", "products"})

_REQUIRED, _OPTIONAL, _NONE = "required", "optional", "none"


@dataclass(frozen=True)
class CommandKind:
    """One command the write API accepts: its name, the event it asks for, what it needs."""

    name: str  # the command's name in docs and logs
    event_type: EventType  # the event appended for it
    needs_item: bool
    qty_rule: str  # _REQUIRED, _OPTIONAL or _NONE


# Endpoint (POST /api/v1/<endpoint>) -> the command it takes.
COMMANDS: dict[str, CommandKind] = {
    "add": CommandKind("AddItem", EventType.ITEM_ADDED, True, _REQUIRED),
    "remove": CommandKind("RemoveItem", EventType.ITEM_REMOVED, True, _OPTIONAL),
    "checkout": CommandKind("Checkout", EventType.CHECKOUT, False, _NONE),
    "clear": CommandKind("ClearCart", EventType.CART_CLEARED, False, _NONE),
}

# The fields each command's body may have; anything else is refused by name.
FIELDS: dict[str, frozenset[str]] = {
    "add": frozenset({"customerId", "itemId", "qty"}),
    "remove": frozenset({"customerId", "itemId", "qty"}),
    "checkout": frozenset({"customerId"}),
    "clear": frozenset({"customerId"}),
}


@dataclass(frozen=True)
class Command:
    """A validated request to change a cart; it becomes an event of type `event_type`."""

    event_type: EventType
    customer_id: str
    item_id: str | None = None
    qty: int | None = None
    expected_version: int | None = None  # from If-Match: the customer version it was decided on


def _is_json_mimetype(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name, value in pairs:
        if name in seen:
            raise ContractError("DUPLICATE_FIELD", f"{name} appears more than once", name)
        seen[name] = value
    return seen


def parse_body(raw: bytes, mimetype: str) -> dict[str, Any]:
    """The request's JSON object; anything but a JSON content type is 415.

    Insisting on the content type is what stops a cross-site HTML form (which can only send
    form, multipart or text/plain bodies) from posting a JSON-looking command.
    """
    if not _is_json_mimetype(mimetype.lower()):
        shown = mimetype or "missing"
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                       f"Content-Type must be application/json, not {shown}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError("INVALID_JSON", f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ContractError("NOT_AN_OBJECT", "the body must be a JSON object")
    # orjson keeps the last of repeated keys; a second parse (a few microseconds on a command
    # body) refuses them instead of guessing which customerId was meant.
    json.loads(raw, object_pairs_hook=_refuse_duplicates)
    return value


def _present(doc: dict[str, Any], field: str) -> bool:
    # JSON null counts as absent, as in the contract's record readers.
    return doc.get(field) is not None


def _servable_id(value: Any, field: str) -> str:
    id_ = parse_id(value, field)
    if id_ in UNSERVABLE_IDS:
        raise ContractError("INVALID_ID", f"{field} cannot be {id_!r}", field)
    return id_


def parse_command(name: str, doc: dict[str, Any]) -> Command:
    """Validate a body for the command endpoint `name` (add, remove, checkout, clear)."""
    kind = COMMANDS[name]
    needs_item, qty_rule = kind.needs_item, kind.qty_rule
    allowed = FIELDS[name]
    for field in doc:
        if field not in allowed:
            raise ContractError("UNKNOWN_FIELD", f"{field} is not a field of {name}", field)
    if not _present(doc, "customerId"):
        raise ContractError("MISSING_FIELD", "customerId is required", "customerId")
    customer_id = _servable_id(doc["customerId"], "customerId")
    if customer_id in READ_API_ROUTES:
        raise ContractError("INVALID_ID", f"customerId {customer_id} is reserved by the read "
                            "API's routes", "customerId")
    item_id = qty = None
    if needs_item:
        if not _present(doc, "itemId"):
            raise ContractError("MISSING_FIELD", "itemId is required", "itemId")
        item_id = _servable_id(doc["itemId"], "itemId")
    if qty_rule == _REQUIRED and not _present(doc, "qty"):
        raise ContractError("MISSING_FIELD", "qty is required", "qty")
    if qty_rule != _NONE and _present(doc, "qty"):
        qty = parse_qty(doc["qty"], "qty")
    return Command(kind.event_type, customer_id, item_id, qty)


def parse_idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header's value, or None when the header is absent."""
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise ApiError(400, "INVALID_IDEMPOTENCY_KEY",
                       f"{IDEMPOTENCY_HEADER} must be 1-{IDEMPOTENCY_KEY_MAX} visible ASCII "
                       "characters", IDEMPOTENCY_HEADER)
    return value


def parse_if_match(value: str | None) -> int | None:
    """The version an If-Match header names, None when the header is absent.

    Strict: exactly one quoted version, as the read API's ETag; `*`, lists and weak tags are
    refused (400) rather than read as "no condition".
    """
    if value is None:
        return None
    m = _IF_MATCH_RE.fullmatch(value.strip(" \t"))
    if m is None:
        raise ApiError(400, "INVALID_IF_MATCH",
                       f'{IF_MATCH_HEADER} must be one quoted cart version, like "7" (the ETag '
                       "of GET /api/v1/<customerId>)", IF_MATCH_HEADER)
    return int(m.group(1))


def event_id_for(command: Command, idempotency_key: str | None) -> str:
    """A deterministic eventId for a keyed request (uuid5), a random one otherwise.

    The event type is part of the name, so a key mistakenly reused for a different command
    cannot make the aggregator drop that command as a duplicate.
    """
    if idempotency_key is None:
        return str(uuid.uuid4())
    name = f"{command.customer_id}\n{command.event_type.value}\n{idempotency_key}"
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, name))
