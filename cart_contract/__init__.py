"""Cartstream's shared contract: event and record schemas, and the store layout (layout.py).

Imports nothing from the services; the read API and the sinks share `redis_carts` from here.
"""

from cart_contract.cart_details import (
    CHECKED_OUT,
    OPEN,
    CartDetails,
    CustomerView,
    EventPosition,
    LineItem,
    Rejection,
    cart_details_from_dict,
    cart_details_to_dict,
    cart_only_dict,
    decode_cart_details,
    encode_cart_details,
    encode_cart_only,
    money,
)
from cart_contract.dead_letter import (
    DeadLetter,
    dead_letter_from_error,
    dead_letter_to_dict,
    decode_dead_letter,
    encode_dead_letter,
)
from cart_contract.errors import ContractError
from cart_contract.events import (
    SCHEMA_VERSION,
    CartEvent,
    EventType,
    cart_event_fields,
    cart_event_from_dict,
    cart_event_to_dict,
    decode_cart_event,
    decode_cart_event_fields,
    encode_cart_event,
    new_cart_event,
    utc_now_iso,
)
from cart_contract.ids import ID_RE, QTY_MAX, QTY_MIN, parse_id, parse_qty
from cart_contract.products import (
    PRICE_MAX,
    STOCK_MAX,
    Product,
    ReservedCount,
    decode_product,
    decode_reserved_count,
    encode_product,
    encode_reserved_count,
    product_from_dict,
    product_to_dict,
)
from cart_contract.topics import CART_DETAILS, CART_EVENTS, DEAD_LETTER, PRODUCT_DETAILS

__all__ = [
    "CART_DETAILS", "CART_EVENTS", "CHECKED_OUT", "DEAD_LETTER", "ID_RE", "OPEN",
    "PRICE_MAX", "PRODUCT_DETAILS", "QTY_MAX", "QTY_MIN", "SCHEMA_VERSION", "STOCK_MAX",
    "CartDetails", "CartEvent", "CustomerView", "cart_only_dict", "encode_cart_only",
    "ContractError", "DeadLetter", "EventPosition", "EventType", "LineItem", "Product",
    "Rejection", "ReservedCount", "decode_reserved_count", "encode_reserved_count",
    "cart_details_from_dict", "cart_details_to_dict", "cart_event_fields",
    "cart_event_from_dict", "cart_event_to_dict", "dead_letter_from_error", "dead_letter_to_dict",
    "decode_cart_details", "decode_cart_event", "decode_cart_event_fields", "decode_dead_letter",
    "decode_product", "encode_cart_details",
    "encode_cart_event", "encode_dead_letter", "encode_product", "money", "new_cart_event",
    "parse_id", "parse_qty", "product_from_dict", "product_to_dict", "utc_now_iso",
]
