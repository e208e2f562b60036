"""Version-guarded writes into Redis and PostgreSQL (the store layout in docs/).

Shared by the sinks and the read API (which re-warms Redis from PostgreSQL with RedisCarts).
Every write is idempotent: re-applying a record, or an older one, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import psycopg
import redis

from cart_contract import CartDetails, Product, encode_cart_details, encode_product
from connectors.records import CartItem, ProductItem, newest

UPDATES_CHANNEL = "cartstream:cart-updated"

# One cart: write it only if its version (ARGV[1]) is newer than the stored one, then publish
# ARGV[4] on channel ARGV[3] ('' for none). The read API re-warms Redis with this one.
CART_CAS = """
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'doc', ARGV[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""

# The same for every cart of a chunk: KEYS[i] with ARGV[3i-1..3i+1] = version, doc, notification
# and ARGV[1] = channel ('' for none). One call applies a whole chunk: far fewer round trips
# and commands to pack than one call per cart.
CARTS_CAS = """
local channel = ARGV[1]
local applied = 0
for i, key in ipairs(KEYS) do
  local j = 3 * i - 1
  local cur = redis.call('HGET', key, 'v')
  if not cur or tonumber(cur) < tonumber(ARGV[j]) then
    redis.call('HSET', key, 'v', ARGV[j], 'doc', ARGV[j + 1])
    if channel ~= '' then redis.call('PUBLISH', channel, ARGV[j + 2]) end
    applied = applied + 1
  end
end
return applied
"""

# Products are versioned by their offset on the product topic; an empty doc is a tombstone, which
# deletes `doc` but keeps `offset` as the guard. KEYS[2] is `catalog:ready`.
PRODUCT_CAS = """
local cur = redis.call('HGET', KEYS[1], 'offset')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'doc')
  redis.call('HSET', KEYS[1], 'offset', ARGV[1])
else
  redis.call('HSET', KEYS[1], 'offset', ARGV[1], 'doc', ARGV[2])
  redis.call('SET', KEYS[2], '1')
end
return 1
"""

_CHUNK = 500  # carts per script call: keeps each call short for the readers waiting behind it


def cart_key(customer_id: str, prefix: str = "") -> str:
    """Redis key of a customer's current cart."""
    return f"{prefix}cart:{customer_id}"


def product_key(product_id: str, prefix: str = "") -> str:
    """Redis key of a product."""
    return f"{prefix}product:{product_id}"


def catalog_ready_key(prefix: str = "") -> str:
    """Redis key that says the catalog sink has written products."""
    return f"{prefix}catalog:ready"


def notification(cart: CartDetails) -> bytes:
    """The pub/sub message announcing a stored cart version."""
    return orjson.dumps({"customerId": cart.customer_id, "version": cart.version,
                         "partition": cart.last_event.partition,
                         "offset": cart.last_event.offset})


class RedisCarts:
    """The cart documents in Redis, written with a compare-and-set on version."""

    def __init__(self, client: redis.Redis, channel: str = UPDATES_CHANNEL,
                 prefix: str = "") -> None:
        self.client, self.channel, self.prefix = client, channel, prefix
        self._cas = client.register_script(CART_CAS)
        self._cas_many = client.register_script(CARTS_CAS)

    def put_many(self, carts: Sequence[CartDetails], notify: bool = True) -> int:
        """Write each cart whose version is newer, one script call each; return how many."""
        channel = self.channel if notify else ""
        pipe = self.client.pipeline(transaction=False)
        for c in carts:
            self._cas(keys=[cart_key(c.customer_id, self.prefix)],
                      args=[c.version, encode_cart_details(c), channel,
                            notification(c) if notify else b""], client=pipe)
        return sum(int(n) for n in pipe.execute())

    def put_docs(self, docs: Sequence[tuple[CartDetails, bytes]], notify: bool = True) -> int:
        """Like put_many, with each cart's document bytes given (the record's own value)."""
        docs = newest(docs, lambda d: d[0].customer_id, lambda d: d[0].version)
        if not docs:
            return 0
        channel = self.channel if notify else ""
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(docs), _CHUNK):
            chunk = docs[start:start + _CHUNK]
            keys = [cart_key(c.customer_id, self.prefix) for c, _ in chunk]
            args: list[bytes | str | int] = [channel]
            for c, doc in chunk:
                args += (c.version, doc, notification(c) if notify else b"")
            self._cas_many(keys=keys, args=args, client=pipe)
        return sum(int(n) for n in pipe.execute())


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
    SELECT {_CART_COLUMNS} FROM carts WITH NO DATA
"""
_MERGE = f"""
INSERT INTO carts ({_CART_COLUMNS}) SELECT {_CART_COLUMNS} FROM stage_carts
ON CONFLICT (cart_id) DO UPDATE SET
    status = EXCLUDED.status, total_qty = EXCLUDED.total_qty,
    total_price = EXCLUDED.total_price, version = EXCLUDED.version,
    last_partition = EXCLUDED.last_partition, last_offset = EXCLUDED.last_offset,
    last_event_id = EXCLUDED.last_event_id, updated_at = EXCLUDED.updated_at, doc = EXCLUDED.doc
WHERE carts.version < EXCLUDED.version
RETURNING cart_id
"""
_LINES = ("COPY cart_lines (cart_id, item_id, position, item_name, qty, unit_price, total_price)"
          " FROM STDIN")


def upsert_carts(conn: psycopg.Connection, carts: Sequence[CartDetails]) -> int:
    """Upsert carts and their lines in one transaction, guarded by version; return rows won."""
    return upsert_cart_docs(conn, [(c, encode_cart_details(c)) for c in carts])


def upsert_cart_docs(conn: psycopg.Connection, docs: Sequence[tuple[CartDetails, bytes]]) -> int:
    """Like upsert_carts, with each cart's document bytes given; return rows won."""
    docs = newest(docs, lambda d: d[0].cart_id, lambda d: d[0].version)
    if not docs:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        # COPY into a staging table, then set-based statements: far faster than row upserts.
        cur.execute(_STAGE)
        with cur.copy(f"COPY stage_carts ({_CART_COLUMNS}) FROM STDIN") as copy:
            for c, doc in docs:
                copy.write_row((
                    c.cart_id, c.customer_id, c.generation, c.status, c.total_qty,
                    c.total_price, c.version, c.last_event.partition, c.last_event.offset,
                    c.last_event.event_id, c.updated_at, doc.decode(),
                ))
        won = {row[0] for row in cur.execute(_MERGE)}
        if won:
            # The carts that won get their lines replaced (COPY from here is cheaper for the
            # database than unpacking the staged documents).
            cur.execute("DELETE FROM cart_lines WHERE cart_id = ANY(%s)", (list(won),))
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


_UPSERT_PRODUCT = """
INSERT INTO products (product_id, product_name, price, stock_qty, deleted, source_offset,
                      updated_at)
VALUES (%s, %s, %s, %s, %s, %s, now())
ON CONFLICT (product_id) DO UPDATE SET
    product_name = COALESCE(EXCLUDED.product_name, products.product_name),
    price = COALESCE(EXCLUDED.price, products.price),
    stock_qty = COALESCE(EXCLUDED.stock_qty, products.stock_qty),
    deleted = EXCLUDED.deleted, source_offset = EXCLUDED.source_offset, updated_at = now()
WHERE products.source_offset < EXCLUDED.source_offset
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
                        "FROM products").fetchall()
    return [ProductItem(pid, offset, None if deleted else Product(pid, name, price, qty), None)
            for pid, name, price, qty, deleted, offset in rows]
