"""Version-guarded writes into Redis and PostgreSQL (names in cart_contract.layout).

The cart documents in Redis are written by cart_contract.redis_carts.RedisCarts, which the read
API shares; the rest is the sinks' own. Every write is idempotent: re-applying a record, or an
older one, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import redis

from cart_contract import CartDetails, Product, encode_product
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
                 " last_partition, last_offset, last_event_id, updated_at")
# One staging row per cart (its latest record in the batch): the cart's columns, the customer's
# guard and position, whether it is the customer's newest record, and the record as it came.
# Typed like the tables (AS SELECT … WITH NO DATA), so a value that does not fit is refused
# by the COPY, as by the tables.
_STAGE_COLUMNS = (f"{_CART_COLUMNS}, customer_version, customer_partition, customer_offset,"
                  " newest, doc")
_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS stage_records ON COMMIT DELETE ROWS AS
    SELECT {_CART_COLUMNS}, version AS customer_version, last_partition AS customer_partition,
           last_offset AS customer_offset, true AS newest, doc
    FROM {CARTS_TABLE} WITH NO DATA
"""
_COPY_STAGE = f"COPY stage_records ({_STAGE_COLUMNS}) FROM STDIN"
_MERGE_CUSTOMERS = f"""
INSERT INTO {CUSTOMERS_TABLE} (customer_id, version, last_partition, last_offset, doc)
SELECT customer_id, customer_version, customer_partition, customer_offset, doc
FROM stage_records WHERE newest
ON CONFLICT (customer_id) DO UPDATE SET
    version = EXCLUDED.version, last_partition = EXCLUDED.last_partition,
    last_offset = EXCLUDED.last_offset, doc = EXCLUDED.doc
WHERE {CUSTOMERS_TABLE}.version < EXCLUDED.version
"""
# A carts row keeps the cart's own part of the record: the record less its "customer" part
# (the same document as encode_cart_only, cut by the database, not encoded again here).
_MERGE = f"""
INSERT INTO {CARTS_TABLE} ({_CART_COLUMNS}, doc)
SELECT {_CART_COLUMNS}, doc - 'customer' FROM stage_records WHERE generation > 0
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


def _text(value: str) -> str:
    """A value in COPY's text format: backslash, tab and line ends escaped."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                 .replace("\r", "\\r"))
    return value


def upsert_cart_docs(conn: psycopg.Connection, docs: Sequence[tuple[CartDetails, bytes]]) -> int:
    """Upsert customers' records, and their carts with their lines, guarded by version.

    One transaction; returns the cart rows won (a cart whose stored version is newer is skipped).
    `customers` takes each customer's newest record as it is (guarded by the customer's
    version); `carts` takes the cart's own part (the record less its `customer` part, guarded
    by the cart's version), so an order's row, whose version no later record moves, never
    changes again. Generation 0 (no command of the customer opened a cart) gets no cart row.

    The rows go as preformatted COPY text in one COPY into one staging table, and two
    set-based statements merge them (far cheaper, for both sides, than row upserts or a
    staging table and a document per table).
    """
    docs = newest(docs, lambda d: d[0].cart_id, lambda d: d[0].customer_version)
    if not docs:
        return 0
    # A customer's newest record is the newest of its cart, so it is among these.
    customers = {id(d) for d in newest(docs, lambda d: d[0].customer_id,
                                       lambda d: d[0].customer_version)}
    rows = []
    for d in docs:
        c, doc = d
        last, cust = c.last_event, c.customer_event
        rows.append("\t".join((
            _text(c.cart_id), _text(c.customer_id), str(c.generation), _text(c.status),
            str(c.total_qty), str(c.total_price), str(c.version), str(last.partition),
            str(last.offset), _text(last.event_id), _text(c.updated_at),
            str(c.customer_version), str(cust.partition), str(cust.offset),
            "t" if id(d) in customers else "f", _text(doc.decode()))))
    rows.append("")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_STAGE)
        with cur.copy(_COPY_STAGE) as copy:
            copy.write("\n".join(rows))
        cur.execute(_MERGE_CUSTOMERS)
        won = {row[0] for row in cur.execute(_MERGE)}
        if won:
            # The carts that won get their lines replaced (COPY from here is cheaper for the
            # database than unpacking the staged documents).
            cur.execute(_DELETE_LINES, (list(won),))
            lines = []
            for c, _ in docs:
                if c.cart_id in won:
                    cart_id = _text(c.cart_id)
                    for position, li in enumerate(c.line_items):
                        lines.append(f"{cart_id}\t{_text(li.item_id)}\t{position}\t"
                                     f"{_text(li.item_name)}\t{li.qty}\t{li.unit_price}\t"
                                     f"{li.total_price}\n")
            with cur.copy(_LINES) as copy:
                copy.write("".join(lines))
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
