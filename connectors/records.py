"""Kafka records into sink items: decode with the contract, refuse the poison, keep the newest.

Pure functions (no I/O): the consume loop runs them while the previous batch is being written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cart_contract import (
    CartDetails,
    ContractError,
    Product,
    ReservedCount,
    decode_cart_details,
    decode_product,
    decode_reserved_count,
    parse_id,
)


class Record(Protocol):
    """The part of a confluent_kafka.Message the sinks use (tests pass plain objects)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class Poison:
    """A record the sink cannot use, and why (it goes to the dead-letter topic)."""

    message: Any
    error: Exception


@dataclass(frozen=True, slots=True)
class CartItem:
    """A valid cart-details record: the parsed cart and its bytes as the aggregator wrote them."""

    cart: CartDetails
    doc: bytes
    message: Any


@dataclass(frozen=True, slots=True)
class ProductItem:
    """A valid product record; `product` is None for a tombstone. `offset` is its version."""

    product_id: str
    offset: int
    product: Product | None
    message: Any


T = TypeVar("T")


def newest(items: Iterable[T], key: Callable[[T], str], version: Callable[[T], int]) -> list[T]:
    """Keep only the highest version per key: a batch often holds several per customer."""
    best: dict[str, T] = {}
    for item in items:
        k = key(item)
        kept = best.get(k)
        if kept is None or version(item) > version(kept):
            best[k] = item
    return list(best.values())


def parse_carts(batch: Sequence[Record]) -> tuple[list[CartItem], list[Poison]]:
    """Decode cart-details records; anything that breaks the contract becomes poison."""
    items: list[CartItem] = []
    poison: list[Poison] = []
    for m in batch:
        value = m.value()
        try:
            if not value:
                raise ContractError("TOMBSTONE", "a cart-details record needs a value; carts "
                                    "are never deleted")
            # The record is stored under the customerId of its value (the key only places it).
            cart = decode_cart_details(value)
        except Exception as exc:  # noqa: BLE001 - whatever a record does, it must not stop us
            poison.append(Poison(m, exc))
            continue
        items.append(CartItem(cart, value, m))
    return items, poison


def parse_products(batch: Sequence[Record]) -> tuple[list[ProductItem], list[Poison]]:
    """Decode product records (None for tombstones); the latest offset per product wins."""
    items: list[ProductItem] = []
    poison: list[Poison] = []
    for m in batch:
        try:
            key = m.key() or b""
            product = decode_product(key, m.value())
            pid = product.product_id if product else key.decode()
            if not pid:
                raise ContractError("MISSING_FIELD", "a tombstone needs its productId as key",
                                    "key")
            if product is None:  # the contract checked no key for a tombstone
                pid = parse_id(pid, "key")
        except Exception as exc:  # noqa: BLE001 - see parse_carts
            poison.append(Poison(m, exc))
            continue
        items.append(ProductItem(pid, m.offset(), product, m))
    return newest(items, lambda i: i.product_id, lambda i: i.offset), poison


@dataclass(frozen=True, slots=True)
class ReservedItem:
    """A valid reserved-count record; `version` guards it."""

    count: ReservedCount
    message: Any


def parse_reserved(batch: Sequence[Record]) -> tuple[list[ReservedItem], list[Poison]]:
    """Decode reserved-count records; the highest version per product wins."""
    items: list[ReservedItem] = []
    poison: list[Poison] = []
    for m in batch:
        try:
            items.append(ReservedItem(decode_reserved_count(m.value()), m))
        except Exception as exc:  # noqa: BLE001 - see parse_carts
            poison.append(Poison(m, exc))
    return newest(items, lambda i: i.count.product_id, lambda i: i.count.version), poison
