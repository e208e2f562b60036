"""Sink connectors: land cart details and the catalog in Redis and PostgreSQL, idempotently.

Processes (each handles SIGTERM; settings in config.py):
    python -m connectors.redis_sink      cart-details-event      -> Redis cart:{customerId}
    python -m connectors.postgres_sink   cart-details-event      -> PostgreSQL carts, cart_lines
    python -m connectors.catalog_sink    product-details-events  -> PostgreSQL products, Redis
    python -m connectors.catalog load FILE [--dry-run]           load a catalog file
    python -m connectors.replay [--sinks …] [--from-events]      rebuild the read models
    python -m connectors.migrate                                 apply the schema migrations

Modules: consumer (the at-least-once batch loop), records (decode, poison, newest per key),
stores (version-guarded writes), sinks (the three sinks' writers: RedisCartWriter,
PostgresCartWriter, CatalogWriter), migrate + migrations/ (schema), service (process entry).
Key, channel and table names: cart_contract.layout; the Redis cart writes shared with the read
API: cart_contract.redis_carts. Test helpers: tests/support/connectors.py.
"""
