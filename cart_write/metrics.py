"""The write API's Prometheus metrics (served at GET /metrics, docs/operations.md).

Granian runs several worker processes; `cartstream serve write` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before they start, so every worker writes its
values there and a scrape answered by any worker sums them all (cart_web.metrics.exposition).
"""

from __future__ import annotations

from prometheus_client import Counter

from cart_web.metrics import HttpMetrics, use_multiprocess_dir
from cart_write.validation import COMMANDS

use_multiprocess_dir()

ROUTES = (*(f"/api/v1/{name}" for name in COMMANDS), "/healthz", "/readyz", "/metrics",
          "/openapi.json")
HTTP = HttpMetrics("cartstream_write", ROUTES)

PRODUCE_ERRORS = Counter("cartstream_write_produce_errors",
                         "Events Kafka did not acknowledge (each answered 503)", ["reason"])
# Reasons (bounded): the brokers are known down; librdkafka's queue is full; it refused the
# record; no ack within the delivery timeout; the delivery report was an error.
UNREACHABLE, QUEUE_FULL, REFUSED, ACK_TIMEOUT, NOT_ACKNOWLEDGED = (
    "unreachable", "queue_full", "refused", "ack_timeout", "not_acknowledged")
PRODUCE_ERROR = {r: PRODUCE_ERRORS.labels(r)
                 for r in (UNREACHABLE, QUEUE_FULL, REFUSED, ACK_TIMEOUT, NOT_ACKNOWLEDGED)}

IDEMPOTENCY = Counter("cartstream_write_idempotency",
                      "Commands with an Idempotency-Key, by what the record said", ["outcome"])
# first: no record yet (the command runs); replayed: a retry answered from the record (a hit);
# in_progress: 409; reused: 422 (another request under the key); unavailable: Redis down, 503.
FIRST, REPLAYED, IN_PROGRESS, REUSED, UNAVAILABLE = (
    "first", "replayed", "in_progress", "reused", "unavailable")
IDEMPOTENCY_OUTCOME = {o: IDEMPOTENCY.labels(o)
                       for o in (FIRST, REPLAYED, IN_PROGRESS, REUSED, UNAVAILABLE)}
