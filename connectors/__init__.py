"""Sink connectors: land cart details and the catalog in Redis and PostgreSQL, idempotently."""
