"""Cartstream read API: carts from Redis (PostgreSQL fallback), orders, queries and the catalog."""
