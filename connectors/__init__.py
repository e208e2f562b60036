"""Sink connectors: land cart details and the catalog in Redis and PostgreSQL, idempotently.

Processes (each handles SIGTERM; settings in config.py; started by the `cartstream` command):
    cartstream sink redis         cart-details-event      -> Redis cart:{customerId}
    cartstream sink postgres      cart-details-event      -> PostgreSQL carts, cart_lines
    cartstream sink catalog       product-details-events  -> PostgreSQL products, Redis
    cartstream sink reservations  product-reservations    -> PostgreSQL product_reservations
    cartstream catalog load FILE [--dry-run]              load a catalog file
    cartstream replay [--sinks …] [--from-events]         rebuild the read models
    cartstream migrate                                    apply the schema migrations

Modules: consumer (the at-least-once batch loop), records (decode, poison, newest per key),
stores (version-guarded writes), sinks (the three sinks' writers: RedisCartWriter,
PostgresCartWriter, CatalogWriter), migrate + migrations/ (schema), service (process entry).
Key, channel and table names: cart_contract.layout; the Redis cart writes shared with the read
API: cart_contract.redis_carts. progress: a bar on a terminal, log lines elsewhere. Test
helpers: tests/support/connectors.py.
"""
