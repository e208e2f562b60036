"""`GET /metrics` (Prometheus text format, prometheus-client): requests by route and status,
latency histograms (cart_web.metrics.HttpMetrics, as the write API's), open read-your-write
waiters, open event streams and the worker's asyncio tasks.

Granian runs several worker processes; `cartstream serve read` points PROMETHEUS_MULTIPROC_DIR
at a fresh directory before they start, so any worker answers /metrics for all of them
(prometheus-client's multiprocess mode). Without it (tests, one process) the default registry
answers.
"""

from __future__ import annotations

import asyncio
import os
import time

from prometheus_client import Gauge
from prometheus_client import multiprocess as _mp
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cart_web.metrics import MULTIPROC_ENV, OTHER_ROUTE, HttpMetrics, use_multiprocess_dir
from cart_web.metrics import exposition as _exposition

use_multiprocess_dir()

_API = "/api/v1/"
_FIXED = ("/", "/healthz", "/readyz", "/openapi.json", "/metrics", "/api/v1/carts",
          "/api/v1/products")
_CUSTOMER_ROUTES = {"": "/api/v1/{customerId}", "orders": "/api/v1/{customerId}/orders",
                    "events": "/api/v1/{customerId}/events",
                    "events/ticket": "/api/v1/{customerId}/events/ticket"}
ROUTES = (*_FIXED, "/static", "/api/v1/products/{productId}", *_CUSTOMER_ROUTES.values())

HTTP = HttpMetrics("cartstream_read", ROUTES)  # the alerts match this prefix
WAITERS = Gauge("cartstream_read_waiters_open", "Read-your-write (minOffset) requests waiting",
                multiprocess_mode="livesum")
STREAMS = Gauge("cartstream_read_streams_open", "Event streams open",
                multiprocess_mode="livesum")
# Set when /metrics is read, by the worker answering (one series per worker process): what a
# leak of waits or streams would show first.
TASKS = Gauge("cartstream_read_event_loop_tasks", "asyncio tasks alive in the worker's event loop",
              multiprocess_mode="liveall")


def route_of(path: str) -> str:
    """The route template a path belongs to (a bounded label set, never the raw path)."""
    if path in HTTP.routes:
        return path
    if path.startswith("/static/"):
        return "/static"
    if not path.startswith(_API):
        return OTHER_ROUTE
    parts = path[len(_API):].split("/")
    if parts[0] == "products":
        return "/api/v1/products/{productId}" if len(parts) == 2 else OTHER_ROUTE
    return _CUSTOMER_ROUTES.get("/".join(parts[1:]), OTHER_ROUTE)


def with_metrics(app: ASGIApp) -> ASGIApp:
    """Count and time every HTTP request (the outermost layer: guard answers count too; a
    stream's time is its lifetime)."""
    observe, clock = HTTP.observe, time.perf_counter

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = clock()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, watch)
        finally:
            observe(route_of(scope.get("path", "")), scope.get("method", ""), status,
                    clock() - started)

    return asgi


def exposition() -> tuple[bytes, str]:
    """The metrics text of every worker (multiprocess mode) or of this process."""
    TASKS.set(len(asyncio.all_tasks()))
    return _exposition()


def process_exited() -> None:
    """Drop this worker's live gauges (multiprocess mode) when it stops."""
    if os.environ.get(MULTIPROC_ENV):
        _mp.mark_process_dead(os.getpid())
