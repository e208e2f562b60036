"""Version-guarded writes into Redis and PostgreSQL (names in cart_contract.layout).

The cart documents in Redis are written by cart_contract.redis_carts.RedisCarts, which the read
API shares; the rest is the sinks' own. Every write is idempotent: re-applying a record, or an
older one, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import redis

from cart_contract import CartDetails, Product, encode_cart_only, encode_product
from cart_contract.layout import (
    CART_LINES_TABLE,
    CARTS_TABLE,
    CUSTOMERS_TABLE,
    PRODUCT_DOC_FIELD,
    PRODUCT_OFFSET_FIELD,
    PRODUCT_RESERVATIONS_TABLE,
    PRODUCTS_TABLE,
    catalog_ready_key,
    product_key,
)
from connectors.records import CartItem, ProductItem, ReservedItem, newest

# Products are versioned by their offset on the product topic; an empty doc is a tombstone, which
# deletes `doc` but keeps `offset` as the guard. KEYS[2] is `catalog:ready`.
PRODUCT_CAS = f"""
local cur = redis.call('HGET', KEYS[1], '{PRODUCT_OFFSET_FIELD}')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], '{PRODUCT_DOC_FIELD}')
  redis.call('HSET', KEYS[1], '{PRODUCT_OFFSET_FIELD}', ARGV[1])
else
  redis.call('HSET', KEYS[1], '{PRODUCT_OFFSET_FIELD}', ARGV[1], '{PRODUCT_DOC_FIELD}', ARGV[2])
  redis.call('SET', KEYS[2], '1')
end
return 1
"""


class RedisProducts:
    """Catalog entries in Redis, guarded by their offset on the product topic."""

    def __init__(self, client: redis.Redis, prefix: str = "") -> None:
        self.client, self.prefix = client, prefix
        self._cas = client.register_script(PRODUCT_CAS)

    def put_many(self, items: Sequence[ProductItem]) -> int:
        """Write (or, for tombstones, delete) each product newer than the stored one."""
        if not items:
            return 0
        pipe = self.client.pipeline(transaction=False)
        ready = catalog_ready_key(self.prefix)
        for it in items:
            doc = b"" if it.product is None else encode_product(it.product)
            self._cas(keys=[product_key(it.product_id, self.prefix), ready],
                      args=[it.offset, doc], client=pipe)
        return sum(int(n) for n in pipe.execute())


# ------------------------------------------------------------------------------ PostgreSQL

_CART_COLUMNS = ("cart_id, customer_id, generation, status, total_qty, total_price, version,"
                 " last_partition, last_offset, last_event_id, updated_at, doc")
_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS stage_carts ON COMMIT DELETE ROWS AS
    SELECT {_CART_COLUMNS} FROM {CARTS_TABLE} WITH NO DATA
"""
_MERGE = f"""
INSERT INTO {CARTS_TABLE} ({_CART_COLUMNS}) SELECT {_CART_COLUMNS} FROM stage_carts
ON CONFLICT (cart_id) DO UPDATE SET
    status = EXCLUDED.status, total_qty = EXCLUDED.total_qty,
    total_price = EXCLUDED.total_price, version = EXCLUDED.version,
    last_partition = EXCLUDED.last_partition, last_offset = EXCLUDED.last_offset,
    last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at, doc = EXCLUDED.doc
WHERE {CARTS_TABLE}.version < EXCLUDED.version
RETURNING cart_id
"""
_LINES = (f"COPY {CART_LINES_TABLE} (cart_id, item_id, position, item_name, qty, unit_price,"
          " total_price) FROM STDIN")
_DELETE_LINES = f"DELETE FROM {CART_LINES_TABLE} WHERE cart_id = ANY(%s)"
_CUSTOMER_COLUMNS = "customer_id, version, last_partition, last_offset, doc"
_STAGE_CUSTOMERS = f"""
CREATE TEMP TABLE IF NOT EXISTS stage_customers ON COMMIT DELETE ROWS AS
    SELECT {_CUSTOMER_COLUMNS} FROM {CUSTOMERS_TABLE} WITH NO DATA
"""
_MERGE_CUSTOMERS = f"""
INSERT INTO {CUSTOMERS_TABLE} ({_CUSTOMER_COLUMNS}) SELECT {_CUSTOMER_COLUMNS} FROM stage_customers
ON CONFLICT (customer_id) DO UPDATE SET
    version = EXCLUDED.version, last_partition = EXCLUDED.last_partition,
    last_offset = EXCLUDED.last_offset, doc = EXCLUDED.doc
WHERE {CUSTOMERS_TABLE}.version < EXCLUDED.version
"""


def upsert_cart_docs(conn: psycopg.Connection, docs: Sequence[tuple[CartDetails, bytes]]) -> int:
    """Upsert customers' records, and their carts with their lines, guarded by version.

    One transaction; returns the cart rows won (a cart whose stored version is newer is skipped).
    `customers` takes each customer's newest record as it is (guarded by the customer's
    version); `carts` takes the cart's own part (`encode_cart_only`, guarded by the cart's
    version), so an order's row, whose version no later record moves, never changes again.
    Generation 0 (no command of the customer opened a cart) gets no cart row.
    """
    customers = newest(docs, lambda d: d[0].customer_id, lambda d: d[0].customer_version)
    docs = newest([d for d in docs if d[0].generation > 0], lambda d: d[0].cart_id,
                  lambda d: d[0].customer_version)
    if not customers:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_STAGE_CUSTOMERS)
        with cur.copy(f"COPY stage_customers ({_CUSTOMER_COLUMNS}) FROM STDIN") as copy:
            for c, doc in customers:
                event = c.customer_event
                copy.write_row((c.customer_id, c.customer_version, event.partition, event.offset,
                                doc.decode()))
        cur.execute(_MERGE_CUSTOMERS)
        if not docs:
            return 0
        # COPY into a staging table, then set-based statements: far faster than row upserts.
        cur.execute(_STAGE)
        with cur.copy(f"COPY stage_carts ({_CART_COLUMNS}) FROM STDIN") as copy:
            for c, doc in docs:
                copy.write_row((
                    c.cart_id, c.customer_id, c.generation, c.status, c.total_qty,
                    c.total_price, c.version, c.last_event.partition, c.last_event.offset,
                    c.last_event.event_id, c.updated_at,
                    doc.decode() if c.customer is None else encode_cart_only(c).decode(),
                ))
        won = {row[0] for row in cur.execute(_MERGE)}
        if won:
            # The carts that won get their lines replaced (COPY from here is cheaper for the
            # database than unpacking the staged documents).
            cur.execute(_DELETE_LINES, (list(won),))
            with cur.copy(_LINES) as copy:
                for c, _ in docs:
                    if c.cart_id in won:
                        for position, li in enumerate(c.line_items):
                            copy.write_row((c.cart_id, li.item_id, position, li.item_name,
                                            li.qty, li.unit_price, li.total_price))
    return len(won)


def upsert_cart_items(conn: psycopg.Connection, items: Sequence[CartItem]) -> int:
    """Upsert parsed cart-details records (their own bytes become `doc`); return rows won."""
    return upsert_cart_docs(conn, [(it.cart, it.doc) for it in items])


_UPSERT_PRODUCT = f"""
INSERT INTO {PRODUCTS_TABLE} (product_id, product_name, price, stock_qty, deleted, source_offset,
                      updated_at)
VALUES (%s, %s, %s, %s, %s, %s, now())
ON CONFLICT (product_id) DO UPDATE SET
    product_name = COALESCE(EXCLUDED.product_name, {PRODUCTS_TABLE}.product_name),
    price = COALESCE(EXCLUDED.price, {PRODUCTS_TABLE}.price),
    stock_qty = COALESCE(EXCLUDED.stock_qty, {PRODUCTS_TABLE}.stock_qty),
    deleted = EXCLUDED.deleted, source_offset = EXCLUDED.source_offset, updated_at = now()
WHERE {PRODUCTS_TABLE}.source_offset < EXCLUDED.source_offset
"""


def upsert_products(conn: psycopg.Connection, items: Sequence[ProductItem]) -> None:
    """Upsert products, guarded by offset; a tombstone marks the row deleted and keeps it."""
    rows = []
    for it in items:
        p = it.product
        if p is None:
            rows.append((it.product_id, None, None, None, True, it.offset))
        else:
            rows.append((it.product_id, p.product_name, p.price, p.stock_qty, False, it.offset))
    if not rows:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_UPSERT_PRODUCT, rows)


def load_products(conn: psycopg.Connection) -> list[ProductItem]:
    """Every product row as the record that landed it (deleted ones as tombstones)."""
    rows = conn.execute("SELECT product_id, product_name, price, stock_qty, deleted, source_offset "
                        f"FROM {PRODUCTS_TABLE}").fetchall()
    return [ProductItem(pid, offset, None if deleted else Product(pid, name, price, qty), None)
            for pid, name, price, qty, deleted, offset in rows]


_UPSERT_RESERVED = f"""
INSERT INTO {PRODUCT_RESERVATIONS_TABLE} (product_id, reserved, version) VALUES (%s, %s, %s)
ON CONFLICT (product_id) DO UPDATE SET reserved = EXCLUDED.reserved, version = EXCLUDED.version
WHERE {PRODUCT_RESERVATIONS_TABLE}.version < EXCLUDED.version
"""


def upsert_reserved(conn: psycopg.Connection, items: Sequence[ReservedItem]) -> int:
    """Store each product's reserved count unless a newer (higher version) one is there."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_UPSERT_RESERVED, [(i.count.product_id, i.count.reserved, i.count.version)
                                           for i in items])
    return len(items)
