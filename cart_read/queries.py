"""Reads from the store layout: carts (Redis, then PostgreSQL), orders, cart queries, catalog."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import redis
from psycopg import sql
from psycopg_pool import PoolTimeout

from cart_contract import (
    CHECKED_OUT,
    CartDetails,
    ContractError,
    Product,
    cart_details_from_dict,
    encode_cart_details,
    product_to_dict,
)
from cart_contract.layout import (
    CART_DOC_FIELD,
    CART_LINES_TABLE,
    CART_VERSION_FIELD,
    CARTS_TABLE,
    CUSTOMERS_TABLE,
    PRODUCT_RESERVATIONS_TABLE,
    PRODUCTS_TABLE,
    cart_key,
)
from cart_contract.redis_carts import CART_CAS
from cart_read.errors import StoreUnavailable
from cart_read.params import (
    KIND_ORDERS,
    KIND_PRODUCTS,
    SORT_TOTAL_PRICE,
    CartQuery,
    PageParams,
    encode_cursor,
)
from cart_read.stores import Stores

log = logging.getLogger(__name__)

_CART_FIELDS = (CART_VERSION_FIELD, CART_DOC_FIELD)

# What "the store cannot answer right now" looks like; other database errors are bugs (500).
_DB_UNAVAILABLE = (psycopg.OperationalError, PoolTimeout, psycopg.errors.UndefinedTable)


@dataclass(frozen=True, slots=True)
class CartRead:
    """A customer's current cart document (JSON bytes), its version and where it came from."""

    doc: bytes
    version: int
    source: str

    @property
    def last_offset(self) -> int | None:
        """lastEvent.offset of the document (None if it has none)."""
        position = last_position(self.doc)
        return None if position is None else position[1]

    @property
    def last_position(self) -> tuple[int, int] | None:
        """lastEvent's (partition, offset) in the document (None if it has none)."""
        return last_position(self.doc)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def last_position(doc: bytes) -> tuple[int, int] | None:
    """The customer's last event (partition, offset) of a cart-details document: its
    customer.lastEvent (lastEvent in records without a customer part); None if malformed."""
    try:
        d = orjson.loads(doc)
        event = (d.get("customer") or d)["lastEvent"]
        partition, offset = event["partition"], event["offset"]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    return (partition, offset) if _is_int(partition) and _is_int(offset) else None


def last_offset(doc: bytes) -> int | None:
    """lastEvent.offset of a cart-details JSON document, None when absent or malformed."""
    position = last_position(doc)
    return None if position is None else position[1]


async def _fetch(pool: Any, query: sql.Composable | str, params: list[Any]) -> list[Any]:
    try:
        async with pool.connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()
    except _DB_UNAVAILABLE as exc:
        raise StoreUnavailable(f"postgresql: {exc}") from exc


def _where(conds: list[sql.Composable]) -> sql.Composable:
    return sql.SQL(" AND ").join(conds) if conds else sql.SQL("TRUE")


# ------------------------------------------------------------------------------------ carts


async def load_cart(stores: Stores, customer_id: str) -> CartRead | None:
    """The customer's current cart from Redis; on a miss or Redis failure from PostgreSQL."""
    redis_answered = False
    if stores.redis_usable():
        try:
            v, doc = await _hmget(stores, cart_key(customer_id, stores.config.redis_key_prefix))
        except (redis.RedisError, TimeoutError) as exc:
            stores.redis_failed(exc)
        else:
            if doc is not None:
                return CartRead(doc, _int_or(v, -1), "redis")
            redis_answered = True
    row = await current_cart_row(await stores.db(), customer_id)
    if row is None:
        return None
    version, doc_dict = row
    try:
        details = cart_details_from_dict(doc_dict)
    except (ContractError, KeyError, TypeError, ArithmeticError) as exc:
        # Serve what PostgreSQL holds, but never copy a doc the contract refuses into Redis.
        log.warning("cart doc of %s does not follow the contract: %s", customer_id, exc)
        return CartRead(orjson.dumps(doc_dict), version, "postgres")
    if redis_answered:
        await rewarm(stores, details)
    return CartRead(encode_cart_details(details), version, "postgres")


async def _hmget(stores: Stores, key: str) -> list[Any]:
    if stores.injected_redis:
        return await stores.reader.hmget(key, _CART_FIELDS)
    async with stores.read_slots:
        # The call's timeout (the client has no socket timeout: see Stores.redis); waiting for
        # a slot is not Redis failing, so it is not counted.
        async with asyncio.timeout(stores.config.redis_timeout_ms / 1000):
            return await stores.reader.hmget(key, _CART_FIELDS)


async def current_cart_row(pool: Any, customer_id: str) -> tuple[int, dict[str, Any]] | None:
    """(version, doc) of the customer's current record, None if there is none."""
    rows = await _fetch(
        pool,
        f"SELECT version, doc FROM {CUSTOMERS_TABLE} WHERE customer_id = %s",
        [customer_id],
    )
    return (rows[0][0], rows[0][1]) if rows else None


async def rewarm(stores: Stores, cart: CartDetails) -> bool:
    """Copy a cart read from PostgreSQL into Redis; True if written.

    The redis sink's own compare-and-set (cart_contract.redis_carts): written only when the
    stored version is lower, so it can never replace a newer cart. No notification: the cart
    did not change, only the cache did.
    """
    try:
        cas = stores.redis.register_script(CART_CAS)
        written = await cas(
            keys=[cart_key(cart.customer_id, stores.config.redis_key_prefix)],
            args=[cart.customer_version, encode_cart_details(cart), "", b""])
        return int(written) == 1
    except redis.RedisError as exc:
        stores.redis_failed(exc)
        return False


def _int_or(raw: Any, default: int) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return default


# ----------------------------------------------------------------------------------- orders


@dataclass(frozen=True)
class Page:
    """One page of a listing and the cursor of the next one (None on the last page)."""

    items: list[dict[str, Any]]
    next_cursor: str | None

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"items": self.items, "nextCursor": self.next_cursor}


async def orders_page(pool: Any, customer_id: str, page: PageParams) -> Page:
    """The customer's checked-out carts, newest generation first."""
    conds = [sql.SQL("customer_id = %s"), sql.SQL("status = %s")]
    params: list[Any] = [customer_id, CHECKED_OUT]
    if page.after is not None:
        conds.append(sql.SQL("generation < %s"))
        params.append(page.after[0])
    query = sql.SQL(
        f"SELECT generation, doc FROM {CARTS_TABLE} WHERE {{}} ORDER BY generation DESC LIMIT %s"
    ).format(_where(conds))
    # One row more than the page tells whether another page exists.
    rows = await _fetch(pool, query, [*params, page.limit + 1])
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    cursor = encode_cursor(KIND_ORDERS, rows[-1][0]) if more else None
    return Page([r[1] for r in rows], cursor)


# ----------------------------------------------------------------------------- cart queries


async def carts_page(pool: Any, q: CartQuery) -> Page:
    """Carts matching the filters, in cartId or (totalPrice, cartId) order, keyset-paginated."""
    conds: list[sql.Composable] = []
    params: list[Any] = []
    if q.status is not None:
        conds.append(sql.SQL("c.status = %s"))
        params.append(q.status)
    if q.min_total is not None:
        conds.append(sql.SQL("c.total_price >= %s"))
        params.append(q.min_total)
    if q.max_total is not None:
        conds.append(sql.SQL("c.total_price <= %s"))
        params.append(q.max_total)
    if q.item_id is not None:
        conds.append(sql.SQL(
            f"EXISTS (SELECT 1 FROM {CART_LINES_TABLE} l"
            " WHERE l.cart_id = c.cart_id AND l.item_id = %s)"
        ))
        params.append(q.item_id)
    by_total = q.sort == SORT_TOTAL_PRICE
    if q.after is not None:
        if by_total:
            conds.append(sql.SQL("(c.total_price, c.cart_id) > (%s, %s)"))
            params.extend(q.after)
        else:
            conds.append(sql.SQL("c.cart_id > %s"))
            params.append(q.after[0])
    order = sql.SQL("c.total_price, c.cart_id" if by_total else "c.cart_id")
    query = sql.SQL(
        f"SELECT c.cart_id, c.total_price, c.doc FROM {CARTS_TABLE} c"
        " WHERE {} ORDER BY {} LIMIT %s"
    ).format(_where(conds), order)
    rows = await _fetch(pool, query, [*params, q.limit + 1])
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    cursor = None
    if more:
        cart_id, total = rows[-1][0], rows[-1][1]
        cursor = (encode_cursor(q.cursor_kind, str(total), cart_id) if by_total
                  else encode_cursor(q.cursor_kind, cart_id))
    return Page([r[2] for r in rows], cursor)


# ---------------------------------------------------------------------------------- catalog

# Reserved units come from the reservation stage's table (none yet: 0).
_PRODUCT_COLUMNS = (f"p.product_id, p.product_name, p.price, p.stock_qty, "
                    f"COALESCE(r.reserved, 0) FROM {PRODUCTS_TABLE} p LEFT JOIN "
                    f"{PRODUCT_RESERVATIONS_TABLE} r USING (product_id)")


def _product(row: Any) -> dict[str, Any]:
    """The catalog entry; `stockQty` is the warehouse count, `available` what checkouts may
    still reserve (never below 0: the warehouse count may drop below what is reserved)."""
    doc = product_to_dict(Product(row[0], row[1], row[2], row[3]))
    doc["reserved"] = row[4]
    doc["available"] = max(row[3] - row[4], 0)
    return doc


async def products_page(pool: Any, page: PageParams) -> Page:
    """Live (not deleted) products in productId order."""
    conds = [sql.SQL("NOT p.deleted")]
    params: list[Any] = []
    if page.after is not None:
        conds.append(sql.SQL("p.product_id > %s"))
        params.append(page.after[0])
    query = sql.SQL(
        f"SELECT {_PRODUCT_COLUMNS} WHERE {{}} ORDER BY p.product_id LIMIT %s"
    ).format(_where(conds))
    rows = await _fetch(pool, query, [*params, page.limit + 1])
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    cursor = encode_cursor(KIND_PRODUCTS, rows[-1][0]) if more else None
    return Page([_product(r) for r in rows], cursor)


async def product(pool: Any, product_id: str) -> dict[str, Any] | None:
    """One live product, None when unknown or deleted."""
    rows = await _fetch(
        pool,
        f"SELECT {_PRODUCT_COLUMNS} WHERE p.product_id = %s AND NOT p.deleted",
        [product_id],
    )
    return _product(rows[0]) if rows else None


# ------------------------------------------------------------------------------------ health


async def ping_redis(stores: Stores) -> str | None:
    """None when Redis answers PING, else the reason."""
    try:
        await stores.redis.ping()
        return None
    except redis.RedisError as exc:
        return f"redis: {exc}"


async def ping_postgres(stores: Stores, timeout_s: float) -> str | None:
    """None when PostgreSQL answers SELECT 1 within timeout_s, else the reason."""
    try:
        pool = await stores.db()
        async with pool.connection(timeout=timeout_s) as conn:
            cur = await conn.execute("SELECT 1")
            await cur.fetchone()
        return None
    except (psycopg.Error, PoolTimeout) as exc:
        return f"postgresql: {exc}"
