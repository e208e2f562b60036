"""Product records on `product-details-events`, keyed by productId; null value = deleted."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from cart_contract._json import integer, load_object, require, schema_version, text
from cart_contract.errors import ContractError
from cart_contract.ids import parse_id
from cart_contract.limits import NAME_MAX, PRICE_MAX, STOCK_MAX, price_error

# The money range (cart_contract.limits) also keeps every derived amount inside Decimal's default
# 28-digit context, so quantizing a total can never raise.
__all__ = ["NAME_MAX", "PRICE_MAX", "STOCK_MAX", "Product", "decode_product", "encode_product",
           "product_from_dict", "product_to_dict"]


@dataclass(frozen=True, slots=True)
class Product:
    """A catalog entry as typed into the console producer."""

    product_id: str
    product_name: str
    price: Decimal
    stock_qty: int
    schema_version: int = 1


def _price(value: Any) -> Decimal:
    # A float here would already have lost the typed digits: decode_product parses numbers
    # straight to Decimal, so only strings, ints and Decimals are legitimate.
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ContractError("INVALID_PRICE", "price must be a number or numeric string", "price")
    try:
        price = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation:
        raise ContractError("INVALID_PRICE", f"price {value!r} is not a number", "price") from None
    error = price_error(price)
    if error is not None:
        raise ContractError("INVALID_PRICE", f"{error} (got {value})", "price")
    # "-0" is zero; keep the sign off so it prints and compares like the zero it is.
    return abs(price) if price.is_zero() else price


def product_from_dict(d: dict[str, Any]) -> Product:
    """Read a product from its wire form; unknown fields are ignored."""
    return Product(
        product_id=parse_id(require(d, "productId"), "productId"),
        product_name=text(d, "productName", NAME_MAX),
        price=_price(require(d, "price")),
        stock_qty=integer(d, "stockQty", 0, STOCK_MAX),
        schema_version=schema_version(d),
    )


def product_to_dict(p: Product) -> dict[str, Any]:
    """The product's wire form (price as a string, so no float ever touches it)."""
    return {
        "productId": p.product_id,
        "productName": p.product_name,
        "price": str(p.price),
        "stockQty": p.stock_qty,
        "schemaVersion": p.schema_version,
    }


def encode_product(p: Product) -> bytes:
    """Serialise a product to JSON bytes."""
    return orjson.dumps(product_to_dict(p))


def decode_product(key: bytes | str | None, value: bytes | str | None) -> Product | None:
    """Parse a product record; None for a tombstone (empty value). Raises ContractError."""
    if value is None or len(value) == 0:
        return None
    try:
        # parse_float=Decimal: "price": 649.99 typed as a number stays exact.
        d = json.loads(value, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ContractError("INVALID_JSON", f"not valid JSON: {exc}") from None
    if not isinstance(d, dict):
        raise ContractError("NOT_AN_OBJECT", "a JSON object is required")
    product = product_from_dict(d)
    if key is not None and len(key) > 0:
        try:
            k = key.decode() if isinstance(key, bytes) else key
        except UnicodeDecodeError:
            raise ContractError("INVALID_ID", "key is not UTF-8", "key") from None
        if k != product.product_id:
            raise ContractError(
                "KEY_MISMATCH", f"key {k!r} differs from productId {product.product_id!r}", "key"
            )
    return product


# ------------------------------------------------------------------ reserved units per product


@dataclass(frozen=True, slots=True)
class ReservedCount:
    """Units of a product reserved by checkouts so far (topic product-reservations, compacted).

    `version` is the offset, on the reservation stage's request topic, of the decision that set
    the count: a store keeps the highest.
    """

    product_id: str
    reserved: int
    version: int


def encode_reserved_count(r: ReservedCount) -> bytes:
    """The record's wire form."""
    return orjson.dumps({"productId": r.product_id, "reserved": r.reserved,
                         "version": r.version})


def decode_reserved_count(raw: bytes | str | None) -> ReservedCount:
    """Read a reserved-count record; unknown fields are ignored. Raises ContractError."""
    d = load_object(raw or b"")
    return ReservedCount(parse_id(require(d, "productId"), "productId"),
                         integer(d, "reserved"), integer(d, "version"))
