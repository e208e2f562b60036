"""The store layout: every Redis key, pub/sub channel and PostgreSQL table name, defined once.

The sinks write this layout; the read API and the write API's catalog check read it. The values
are what stored data already uses: changing one makes existing Redis keys or tables unreadable.
A deployment's `REDIS_KEY_PREFIX` goes in front of every Redis key (not of the channel, which
`CART_UPDATES_CHANNEL` replaces as a whole). The migrations in connectors/migrations/ spell the
table names out, as SQL history must.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------- Redis

# Default pub/sub channel of stored carts: the redis sink publishes `notification(cart)` on it
# when a newer cart version lands; the read API's read-your-write waiters subscribe to it.
UPDATES_CHANNEL = "cartstream:cart-updated"

# HASH `cart:{customerId}`: the customer's current cart.
CART_KEY_PREFIX = "cart:"
CART_VERSION_FIELD = "v"  # the cart's version: the compare-and-set guard
CART_DOC_FIELD = "doc"  # the cart-details JSON document

# HASH `product:{productId}`: one catalog entry. A tombstone deletes `doc` and keeps `offset`.
PRODUCT_KEY_PREFIX = "product:"
PRODUCT_OFFSET_FIELD = "offset"  # the record's offset on the product topic: the guard
PRODUCT_DOC_FIELD = "doc"  # the product JSON document

# STRING `catalog:ready`: set once the catalog sink has written a product; until then the write
# API does not check products against the catalog.
CATALOG_READY_KEY = "catalog:ready"

# STRING `idempotency:{Idempotency-Key}`: the write API's record of a keyed command (its
# request fingerprint, then its answer), kept for the idempotency retention.
IDEMPOTENCY_KEY_PREFIX = "idempotency:"


def cart_key(customer_id: str, prefix: str = "") -> str:
    """Redis key of a customer's current cart."""
    return f"{prefix}{CART_KEY_PREFIX}{customer_id}"


def product_key(product_id: str, prefix: str = "") -> str:
    """Redis key of a product."""
    return f"{prefix}{PRODUCT_KEY_PREFIX}{product_id}"


def idempotency_key(key: str, prefix: str = "") -> str:
    """Redis key of an Idempotency-Key's record."""
    return f"{prefix}{IDEMPOTENCY_KEY_PREFIX}{key}"


def catalog_ready_key(prefix: str = "") -> str:
    """Redis key that says the catalog sink has written products."""
    return f"{prefix}{CATALOG_READY_KEY}"


# STRING `ratelimit:{kind}:{principal}:{window}`: the secure profile's per-principal request
# count in one fixed window (kind: commands, waits); expires with its window.
RATE_LIMIT_KEY_PREFIX = "ratelimit:"
# STRING `waiting:{principal}`: how many long-poll reads a principal holds open right now.
WAITING_KEY_PREFIX = "waiting:"


def rate_limit_key(kind: str, principal: str, window: int, prefix: str = "") -> str:
    """Redis key counting a principal's requests of one kind in one rate-limit window."""
    return f"{prefix}{RATE_LIMIT_KEY_PREFIX}{kind}:{principal}:{window}"


def waiting_key(principal: str, prefix: str = "") -> str:
    """Redis key counting a principal's open long-poll reads."""
    return f"{prefix}{WAITING_KEY_PREFIX}{principal}"


# STRING `stream-ticket:{sha256 of the ticket}` = customerId: a short-lived ticket that opens
# that customer's event stream (a browser's EventSource cannot send a bearer token).
STREAM_TICKET_KEY_PREFIX = "stream-ticket:"


def stream_ticket_key(ticket_hash: str, prefix: str = "") -> str:
    """Redis key of one event-stream ticket (by its hash: the key never holds the ticket)."""
    return f"{prefix}{STREAM_TICKET_KEY_PREFIX}{ticket_hash}"


# ----------------------------------------------------------------------------- PostgreSQL

CARTS_TABLE = "carts"  # one row per opened cart (customer and generation), doc = the cart's part
CUSTOMERS_TABLE = "customers"  # one row per customer, doc = its current cart-details record
CART_LINES_TABLE = "cart_lines"  # one row per line item of a cart
PRODUCTS_TABLE = "products"  # the catalog; deleted products keep their row (deleted = true)
PRODUCT_RESERVATIONS_TABLE = "product_reservations"  # units reserved per product, version-guarded
MIGRATIONS_TABLE = "schema_migrations"  # the schema versions applied (connectors.migrate)
