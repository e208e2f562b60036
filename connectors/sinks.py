"""The three sinks' writers: how each turns a batch of Kafka records into store writes.

RedisCartWriter (redis sink), PostgresCartWriter (postgres sink) and CatalogWriter (catalog
sink) are the consume loop's RecordWriters: each has `prepare(batch)` (decode, refuse poison,
keep the newest per key: CPU only) and `write(prepared)` (the store writes; raises while a store
is down, so the loop retries), and is callable as `writer(batch)` for both at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import redis

from cart_contract import ContractError
from cart_contract.layout import UPDATES_CHANNEL, catalog_ready_key
from cart_contract.redis_carts import RedisCarts
from connectors.migrate import migrate
from connectors.records import (
    CartItem,
    Poison,
    ProductItem,
    ReservedItem,
    newest,
    parse_carts,
    parse_products,
    parse_reserved,
)
from connectors.stores import (
    RedisProducts,
    load_products,
    upsert_cart_items,
    upsert_products,
    upsert_reserved,
)

log = logging.getLogger(__name__)

# Errors PostgreSQL raises because of a record's content (a value out of a column's range, a
# duplicate line, a \u0000 in a document): retrying cannot help, that record is poison.
DATA_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError,
               psycopg.errors.ProgramLimitExceeded)

T = TypeVar("T")


@dataclass(frozen=True)
class Prepared:
    """A decoded batch: the items to write and the records refused already."""

    items: list[Any]
    poison: list[Poison]


class StoreWriter:
    """What the three writers share: the call form and the count of what they wrote."""

    written = 0  # rows or keys the version guard let through, over the writer's life
    # Sees every valid cart record of a batch before it is coalesced (replay from events
    # follows the aggregator's progress with it); None: nobody watches.
    observe: Callable[[list[CartItem]], None] | None = None

    def prepare(self, batch: Sequence[Any]) -> Prepared:
        """Decode a batch."""
        raise NotImplementedError

    def write(self, prepared: Prepared) -> list[Poison]:
        """Store a decoded batch; return all of its poison records."""
        raise NotImplementedError

    def __call__(self, batch: Sequence[Any]) -> list[Poison]:
        """Decode and store a batch; return its poison records."""
        return self.write(self.prepare(batch))


class RedisCartWriter(StoreWriter):
    """cart-details → Redis `cart:{customerId}` (layout.cart_key), version-guarded, notified."""

    def __init__(self, client: redis.Redis, channel: str = UPDATES_CHANNEL,
                 prefix: str = "") -> None:
        self.carts = RedisCarts(client, channel, prefix)

    def prepare(self, batch: Sequence[Any]) -> Prepared:
        """Decode, and keep each customer's highest version."""
        return self.coalesce(*parse_carts(batch))

    def coalesce(self, items: list[CartItem], poison: list[Poison]) -> Prepared:
        """Keep each customer's highest version of decoded records."""
        if self.observe is not None:
            self.observe(items)
        return Prepared(newest(items, lambda i: i.cart.customer_id,
                               lambda i: i.cart.customer_version), poison)

    def write(self, prepared: Prepared) -> list[Poison]:
        """One script call per chunk of carts."""
        self.written += self.carts.put_docs([(i.cart, i.doc) for i in prepared.items])
        return prepared.poison


class Database:
    """One PostgreSQL connection, migrated on connect and replaced when it breaks."""

    def __init__(self, url: str, application_name: str = "cartstream-sink") -> None:
        self.url, self.application_name = url, application_name
        self._conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        """A live, migrated connection."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                         application_name=self.application_name)
            applied = migrate(self._conn)
            if applied:
                log.info("migrated %s to schema version %d", self.application_name, applied[-1])
        return self._conn

    def close(self) -> None:
        """Close the connection, if any."""
        if self._conn is not None:
            self._conn.close()


def write_or_split(items: list[T], write: Callable[[list[T]], Any],
                   message_of: Callable[[T], Any]) -> list[Poison]:
    """Write `items`; when the database refuses the data, halve until the culprits are alone.

    Each attempt is its own transaction, so the halves that pass are stored; every item refused
    on its own is returned as poison. Connection errors propagate (the loop retries the batch).
    """
    try:
        write(items)
        return []
    except DATA_ERRORS as exc:
        if len(items) == 1:
            reason = ContractError("STORE_REJECTED",
                                   f"PostgreSQL refused the record: {str(exc).strip()[:500]}")
            return [Poison(message_of(items[0]), reason)]
    mid = len(items) // 2
    return (write_or_split(items[:mid], write, message_of)
            + write_or_split(items[mid:], write, message_of))


class PostgresCartWriter(StoreWriter):
    """cart-details → PostgreSQL `customers`, `carts` + `cart_lines`, one transaction per batch."""

    def __init__(self, database_url: str) -> None:
        self.db = Database(database_url, "cartstream-sink-postgres")

    def prepare(self, batch: Sequence[Any]) -> Prepared:
        """Decode, and keep each cart's latest record (the highest customer version: an
        order's records all have its version, and the customer's newest is among these)."""
        return self.coalesce(*parse_carts(batch))

    def coalesce(self, items: list[CartItem], poison: list[Poison]) -> Prepared:
        """Keep each cart's latest of decoded records (see prepare)."""
        if self.observe is not None:
            self.observe(items)
        return Prepared(newest(items, lambda i: i.cart.cart_id,
                               lambda i: i.cart.customer_version), poison)

    def write(self, prepared: Prepared) -> list[Poison]:
        """COPY, merge guarded by version, replace the lines of the carts that won."""
        conn = self.db.connection()

        def upsert(items: list[CartItem]) -> None:
            self.written += upsert_cart_items(conn, items)

        return prepared.poison + write_or_split(prepared.items, upsert, lambda i: i.message)


class CatalogWriter(StoreWriter):
    """product-details-events → PostgreSQL `products` and Redis `product:{id}`."""

    def __init__(self, client: redis.Redis, database_url: str, prefix: str = "") -> None:
        self.products = RedisProducts(client, prefix)
        self.db = Database(database_url, "cartstream-sink-catalog")

    def restore_redis(self) -> int | None:
        """Copy the catalog from PostgreSQL into a Redis that lost it; None when not needed.

        Redis restarted empty loses `product:*` and `catalog:ready`, but the offsets of what
        they held are committed, so Kafka will not deliver those records again. PostgreSQL
        holds the same catalog (same offsets), so it is the source; the offset guard keeps any
        newer record the sink writes meanwhile.
        """
        client, ready = self.products.client, catalog_ready_key(self.products.prefix)
        if client.exists(ready):
            return None
        # Its own connection: the writer's one may be inside a batch's transaction right now.
        with psycopg.connect(self.db.url, autocommit=True, connect_timeout=5,
                             application_name="cartstream-sink-catalog-restore") as conn:
            items = load_products(conn)
        written = self.products.put_many(items)
        if any(it.product is not None for it in items):
            # Also when every product was already there and only the marker went missing.
            client.set(ready, "1")
        return written

    def prepare(self, batch: Sequence[Any]) -> Prepared:
        """Decode; the latest record per product wins."""
        items, poison = parse_products(batch)
        return Prepared(items, poison)

    def write(self, prepared: Prepared) -> list[Poison]:
        """PostgreSQL first, then Redis (the write API's check); both guarded by offset."""
        conn = self.db.connection()
        poison = write_or_split(prepared.items, lambda items: upsert_products(conn, items),
                                lambda i: i.message)
        refused = {id(p.message) for p in poison}
        good: list[ProductItem] = [i for i in prepared.items if id(i.message) not in refused]
        self.written += self.products.put_many(good)
        return prepared.poison + poison


class ReservationWriter(StoreWriter):
    """product-reservations → PostgreSQL `product_reservations`, guarded by version."""

    def __init__(self, database_url: str) -> None:
        self.db = Database(database_url, "cartstream-sink-reservations")

    def prepare(self, batch: Sequence[Any]) -> Prepared:
        """Decode; the highest version per product wins."""
        items, poison = parse_reserved(batch)
        return Prepared(items, poison)

    def write(self, prepared: Prepared) -> list[Poison]:
        """One transaction per batch (split on a poison record)."""
        conn = self.db.connection()

        def upsert(items: Sequence[ReservedItem]) -> None:
            self.written += upsert_reserved(conn, items)

        return prepared.poison + write_or_split(prepared.items, upsert, lambda i: i.message)
