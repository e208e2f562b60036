"""The three sinks: how each turns a batch of Kafka records into store writes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg
import redis
from confluent_kafka import Message

from cart_contract import (
    CartDetails,
    ContractError,
    Product,
    decode_cart_details,
    decode_product,
    encode_product,
)
from connectors.consumer import Poison
from connectors.migrate import migrate
from connectors.stores import (
    RedisCarts,
    RedisProducts,
    newest_per_key,
    upsert_carts,
    upsert_products,
)

log = logging.getLogger(__name__)


def parse_carts(batch: Sequence[Message]) -> tuple[list[CartDetails], list[Poison]]:
    """Decode cart-details records; the undecodable become poison."""
    carts, poison = [], []
    for m in batch:
        try:
            carts.append(decode_cart_details(m.value() or b""))
        except ContractError as exc:
            poison.append(Poison(m, exc))
    return carts, poison


def parse_products(batch: Sequence[Message]) -> tuple[list[tuple[str, int, Product | None]],
                                                        list[Poison]]:
    """Decode product records (None for tombstones), latest offset per product wins."""
    latest: dict[str, tuple[str, int, Product | None]] = {}
    poison = []
    for m in batch:
        try:
            key = (m.key() or b"").decode()
            product = decode_product(key, m.value())
            pid = product.product_id if product else key
            if not pid:
                raise ContractError("MISSING_FIELD", "a tombstone needs its productId key", "key")
        except (ContractError, UnicodeDecodeError) as exc:
            poison.append(Poison(m, exc))
            continue
        if pid not in latest or m.offset() > latest[pid][1]:
            latest[pid] = (pid, m.offset(), product)
    return list(latest.values()), poison


class RedisCartSink:
    """cart-details → Redis `cart:{customerId}`, version-guarded, with a notification."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.carts = RedisCarts(client, channel)

    def __call__(self, batch: Sequence[Message]) -> list[Poison]:
        """Store a batch; return its poison records."""
        carts, poison = parse_carts(batch)
        self.carts.put_many(newest_per_key(carts))
        return poison


class Database:
    """One PostgreSQL connection, migrated on connect and replaced when it breaks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        """A live, migrated connection."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            migrate(self._conn)
        return self._conn


class PostgresCartSink:
    """cart-details → PostgreSQL `carts` + `cart_lines`, one transaction per batch."""

    def __init__(self, database_url: str) -> None:
        self.db = Database(database_url)

    def __call__(self, batch: Sequence[Message]) -> list[Poison]:
        """Store a batch; return its poison records."""
        carts, poison = parse_carts(batch)
        upsert_carts(self.db.connection(), carts)
        return poison


class CatalogSink:
    """product-details-events → Redis `product:{id}` and PostgreSQL `products`."""

    def __init__(self, client: redis.Redis, database_url: str) -> None:
        self.products = RedisProducts(client)
        self.db = Database(database_url)

    def __call__(self, batch: Sequence[Message]) -> list[Poison]:
        """Store a batch in both stores; return its poison records."""
        items, poison = parse_products(batch)
        upsert_products(self.db.connection(), items)
        self.products.put_many(
            [(pid, off, None if p is None else encode_product(p)) for pid, off, p in items]
        )
        return poison
