"""Version-guarded writes into Redis and PostgreSQL, shared by the sinks and the read API."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
import psycopg
import redis

from cart_contract import CartDetails, Product, cart_details_to_dict, encode_cart_details

# Writes the cart only if its version is newer than the stored one, then tells the waiters.
CART_CAS = """
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'doc', ARGV[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""

# Products are versioned by their offset on the (compacted) product topic; empty doc = deleted.
PRODUCT_CAS = """
local cur = redis.call('HGET', KEYS[1], 'offset')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 'doc')
  redis.call('HSET', KEYS[1], 'offset', ARGV[1])
else
  redis.call('HSET', KEYS[1], 'offset', ARGV[1], 'doc', ARGV[2])
end
redis.call('SET', 'catalog:ready', '1')
return 1
"""


def cart_key(customer_id: str) -> str:
    """Redis key of a customer's current cart."""
    return f"cart:{customer_id}"


def newest_per_key(carts: Iterable[CartDetails], key=lambda c: c.customer_id) -> list[CartDetails]:
    """Keep only the highest version per key: a batch often holds several per customer."""
    best: dict[str, CartDetails] = {}
    for c in carts:
        k = key(c)
        if k not in best or c.version > best[k].version:
            best[k] = c
    return list(best.values())


class RedisCarts:
    """The cart documents in Redis, written with a compare-and-set on version."""

    def __init__(self, client: redis.Redis, channel: str = "cartstream:cart-updated") -> None:
        self.client, self.channel = client, channel
        self._cas = client.register_script(CART_CAS)

    def put_many(self, carts: Sequence[CartDetails], notify: bool = True) -> int:
        """Write each cart whose version is newer; return how many were written."""
        pipe = self.client.pipeline(transaction=False)
        for c in carts:
            note = orjson.dumps({"customerId": c.customer_id, "version": c.version,
                                 "partition": c.last_event.partition,
                                 "offset": c.last_event.offset}) if notify else b""
            self._cas(keys=[cart_key(c.customer_id)],
                      args=[c.version, encode_cart_details(c), self.channel if notify else "",
                            note], client=pipe)
        return sum(int(x) for x in pipe.execute())


class RedisProducts:
    """Catalog entries in Redis, guarded by their offset on the product topic."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._cas = client.register_script(PRODUCT_CAS)

    def put_many(self, items: Sequence[tuple[str, int, bytes | None]]) -> None:
        """Write (productId, offset, doc-or-None-for-deleted) entries."""
        pipe = self.client.pipeline(transaction=False)
        for pid, offset, doc in items:
            self._cas(keys=[f"product:{pid}"], args=[offset, doc or b""], client=pipe)
        pipe.execute()


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


def upsert_carts(conn: psycopg.Connection, carts: Sequence[CartDetails]) -> int:
    """Upsert carts and their lines in one transaction, guarded by version; return rows won."""
    carts = newest_per_key(carts, key=lambda c: c.cart_id)
    if not carts:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        # COPY into a staging table, then one set-based merge: far faster than row upserts.
        cur.execute(_STAGE)
        with cur.copy(f"COPY stage_carts ({_CART_COLUMNS}) FROM STDIN") as copy:
            for c in carts:
                copy.write_row((
                    c.cart_id, c.customer_id, c.generation, c.status, c.total_qty,
                    c.total_price, c.version, c.last_event.partition, c.last_event.offset,
                    c.last_event.event_id, c.updated_at,
                    orjson.dumps(cart_details_to_dict(c)).decode(),
                ))
        won = {row[0] for row in cur.execute(_MERGE)}
        if won:
            ids = list(won)
            cur.execute("DELETE FROM cart_lines WHERE cart_id = ANY(%s)", (ids,))
            with cur.copy(
                "COPY cart_lines (cart_id, item_id, position, item_name, qty, unit_price,"
                " total_price) FROM STDIN"
            ) as copy:
                for c in carts:
                    if c.cart_id in won:
                        for pos, li in enumerate(c.line_items):
                            copy.write_row((c.cart_id, li.item_id, pos, li.item_name, li.qty,
                                            li.unit_price, li.total_price))
    return len(won)


_UPSERT_PRODUCT = """
INSERT INTO products (product_id, product_name, price, stock_qty, deleted, source_offset,
                      updated_at)
VALUES (%s, %s, %s, %s, %s, %s, now())
ON CONFLICT (product_id) DO UPDATE SET
    product_name = EXCLUDED.product_name,
    price = EXCLUDED.price, stock_qty = EXCLUDED.stock_qty, deleted = EXCLUDED.deleted,
    source_offset = EXCLUDED.source_offset, updated_at = now()
WHERE products.source_offset < EXCLUDED.source_offset
"""


def upsert_products(conn: psycopg.Connection,
                    items: Sequence[tuple[str, int, Product | None]]) -> None:
    """Upsert (productId, offset, product-or-None-for-deleted), guarded by offset."""
    rows = []
    for pid, offset, p in items:
        if p is None:
            rows.append((pid, "", 0, 0, True, offset))
        else:
            rows.append((pid, p.product_name, p.price, p.stock_qty, False, offset))
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_UPSERT_PRODUCT, rows)
