"""Sink connectors: land cart details and the catalog in Redis and PostgreSQL, idempotently.

Processes (each handles SIGTERM; settings in config.py):
    python -m connectors.redis_sink      cart-details-event      -> Redis cart:{customerId}
    python -m connectors.postgres_sink   cart-details-event      -> PostgreSQL carts, cart_lines
    python -m connectors.catalog_sink    product-details-events  -> PostgreSQL products, Redis
    python -m connectors.catalog load FILE [--dry-run]           load a catalog file
    python -m connectors.replay [--sinks …] [--from-events]      rebuild the read models
    python -m connectors.migrate                                 apply the schema migrations

Modules: consumer (the at-least-once batch loop), records (decode, poison, newest per key),
stores (version-guarded writes), sinks (the three sinks), migrate + migrations/ (schema),
service (process entry), testing (helpers for tests and the bench).
"""
