"""`GET /metrics` (Prometheus text format, prometheus-client): requests by route and status,
latency histograms, open read-your-write waiters and open event streams.

Granian runs several worker processes; `cartstream serve read` points PROMETHEUS_MULTIPROC_DIR
at a fresh directory before they start, so any worker answers /metrics for all of them
(prometheus-client's multiprocess mode). Without it (tests, one process) the default registry
answers.
"""

from __future__ import annotations

import asyncio
import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cart_read.server import MULTIPROC_ENV

REQUESTS = Counter("cart_read_requests_total", "Read API requests answered",
                   ("route", "method", "status"))
LATENCY = Histogram("cart_read_request_duration_seconds",
                    "Read API time to the end of the answer (streams: their lifetime)", ("route",),
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
WAITERS = Gauge("cart_read_waiters_open", "Read-your-write (minOffset) requests waiting",
                multiprocess_mode="livesum")
STREAMS = Gauge("cart_read_streams_open", "Event streams open",
                multiprocess_mode="livesum")
# Set when /metrics is read, by the worker answering (one series per worker process): what a
# leak of waits or streams would show first.
TASKS = Gauge("cart_read_event_loop_tasks", "asyncio tasks alive in the worker's event loop",
              multiprocess_mode="liveall")

_API = "/api/v1/"
_FIXED = frozenset({"/", "/healthz", "/readyz", "/openapi.json", "/metrics",
                    "/api/v1/carts", "/api/v1/products"})


def route_of(path: str) -> str:
    """The route template a path belongs to (a bounded label set, never the raw path)."""
    if path in _FIXED:
        return path
    if path.startswith("/static/"):
        return "/static"
    if not path.startswith(_API):
        return "other"
    parts = path[len(_API):].split("/")
    if parts[0] == "products":
        return "/api/v1/products/{productId}" if len(parts) == 2 else "other"
    tail = "/".join(parts[1:])
    known = {"": "/api/v1/{customerId}", "orders": "/api/v1/{customerId}/orders",
             "events": "/api/v1/{customerId}/events",
             "events/ticket": "/api/v1/{customerId}/events/ticket"}
    return known.get(tail, "other") if len(parts) > 1 else known[""]


def with_metrics(app: ASGIApp) -> ASGIApp:
    """Count and time every HTTP request (the outermost layer: guard answers count too)."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await app(scope, receive, watch)
        finally:
            route = route_of(scope.get("path", ""))
            REQUESTS.labels(route, scope.get("method", ""), str(status[0])).inc()
            LATENCY.labels(route).observe(time.perf_counter() - t0)

    return asgi


def exposition() -> tuple[bytes, str]:
    """The metrics text of every worker (multiprocess mode) or of this process."""
    TASKS.set(len(asyncio.all_tasks()))
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def process_exited() -> None:
    """Drop this worker's live gauges (multiprocess mode) when it stops."""
    if os.environ.get(MULTIPROC_ENV):
        _mp.mark_process_dead(os.getpid())

