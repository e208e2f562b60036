"""Product records on `product-details-events`, keyed by productId; null value = deleted."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from cart_contract._json import integer, require, schema_version, text
from cart_contract.errors import ContractError
from cart_contract.ids import parse_id


@dataclass(frozen=True, slots=True)
class Product:
    """A catalog entry as typed into the console producer."""

    product_id: str
    product_name: str
    price: Decimal
    stock_qty: int
    schema_version: int = 1


def _price(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ContractError("INVALID_PRICE", "price must be a number or numeric string", "price")
    try:
        price = Decimal(value) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ContractError("INVALID_PRICE", f"price {value!r} is not a number", "price") from None
    if not price.is_finite() or price < 0:
        raise ContractError("INVALID_PRICE", "price must be a finite number >= 0", "price")
    return price


def product_from_dict(d: dict[str, Any]) -> Product:
    """Read a product from its wire form; unknown fields are ignored."""
    return Product(
        product_id=parse_id(require(d, "productId"), "productId"),
        product_name=text(d, "productName"),
        price=_price(require(d, "price")),
        stock_qty=integer(d, "stockQty"),
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
    """Parse a product record; None for a tombstone. Raises ContractError."""
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
        k = key.decode() if isinstance(key, bytes) else key
        if k != product.product_id:
            raise ContractError(
                "KEY_MISMATCH", f"key {k!r} differs from productId {product.product_id!r}", "key"
            )
    return product
