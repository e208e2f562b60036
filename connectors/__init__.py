"""Sink connectors: land cart details and the catalog in Redis and PostgreSQL, idempotently.

Processes (each handles SIGTERM; settings in config.py; started by the `cartstream` command):
    cartstream sink redis         cart-details-event      -> Redis cart:{customerId}
    cartstream sink postgres      cart-details-event      -> PostgreSQL carts, cart_lines
    cartstream sink catalog       product-details-events  -> PostgreSQL products, Redis
    cartstream catalog load FILE [--dry-run]              load a catalog file
    cartstream replay [--sinks …] [--from-events]         rebuild the read models
    cartstream migrate                                    apply the schema migrations

Modules: consumer (the at-least-once batch loop), records (decode, poison, newest per key),
stores (version-guarded writes), sinks (the three sinks), migrate + migrations/ (schema),
service (a sink's process), progress (bar or log lines), testing (helpers for tests and the bench).
"""
