"""HTTP plumbing shared by the write and read APIs: the JSON error shape and its OpenAPI pieces,
authentication and browser safety (secure profile), granian; and Prometheus metrics
(`metrics`: request counting for the APIs, the metrics/health/readiness port of the aggregator
and the sinks, which import only that module: it needs no Flask).

Imports nothing from the services (like `cart_contract`), so either API can use it alone.
"""
