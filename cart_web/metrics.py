"""Prometheus plumbing shared by the HTTP APIs and the background services' metrics ports.

- `HttpMetrics`: requests by route template, method and status, and latency by route. `observe`
  is framework-neutral (an ASGI app can call it); `wrap_wsgi` wraps a WSGI app with it.
- `exposition`: the text format of this process, or of every worker of a multi-process server
  (prometheus_client's multiprocess mode, when PROMETHEUS_MULTIPROC_DIR is set).
- `LagReadiness` and `ProbeServer`: `/metrics`, `/healthz` and `/readyz` of a consumer (the
  aggregator, each sink) on its own port.

Only stdlib and prometheus_client: the sinks and the aggregator use it without Flask.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A path that is none of the routes: its requests share one label value, so a scan of random
# paths cannot grow the number of series.
OTHER_ROUTE = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The APIs answer in about a millisecond; a read-your-writes wait may take its whole timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0)

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


class HttpMetrics:
    """`<prefix>_http_requests_total{route,method,status}` and
    `<prefix>_http_request_duration_seconds{route}`.

    Label values are bounded: `route` is one of the templates given (else `other`), `method`
    one of the HTTP methods (else `OTHER`), `status` a 3-digit code. The labelled children are
    cached, so a request costs two dict lookups and two increments.
    """

    def __init__(self, prefix: str, routes: Iterable[str],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self.requests = Counter(f"{prefix}_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram(f"{prefix}_http_request_duration_seconds",
                                 "Time from the request to its response body", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.routes = {r: r for r in routes}
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def route_of(self, path: str) -> str:
        """The route template a path is counted under (exact paths only)."""
        return self.routes.get(path, OTHER_ROUTE)

    def observe(self, route: str, method: str, status: int | str, seconds: float) -> None:
        """Count one answered request."""
        key = (route, method, str(status))
        children = self._children.get(key)
        if children is None:
            if method not in _METHODS:
                key = (route, "OTHER", key[2])
            children = self._children.setdefault(
                key, (self.requests.labels(*key), self.latency.labels(route)))
        children[0].inc()
        children[1].observe(seconds)

    def wrap_wsgi(self, app: WsgiApp) -> WsgiApp:
        """Count every request `app` answers; an exception counts as a 500.

        The time ends when `app` returns: the body of an app that streams is not included (the
        APIs here answer with one buffer).
        """
        routes, observe, clock = self.routes, self.observe, time.perf_counter

        def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            started = clock()
            status = "500"

            def capture(line: str, headers: Any, exc_info: Any = None) -> Any:
                nonlocal status
                status = line[:3]
                return start_response(line, headers, exc_info)

            try:
                return app(environ, capture)
            finally:
                observe(routes.get(environ.get("PATH_INFO") or "", OTHER_ROUTE),
                        environ.get("REQUEST_METHOD") or "", status, clock() - started)

        return wsgi


def use_multiprocess_dir() -> None:
    """Store this process's values under PROMETHEUS_MULTIPROC_DIR, if set (call before creating
    metrics).

    prometheus_client reads the variable once, when first imported; a worker forked from a
    parent that had imported it before the variable was set would otherwise keep its values to
    itself.
    """
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


@contextmanager
def own_multiprocess_dir(server: str) -> Iterator[str]:
    """A fresh metrics directory for one server's worker processes, removed when it stops.

    Set before any worker imports prometheus_client (prometheus_client's multiprocess mode), so
    /metrics in any worker sums every worker. It is this server's own: another server on the
    machine, or a previous run, never adds to its counts.
    """
    metrics_dir = tempfile.mkdtemp(prefix=f"cartstream-{server}-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        yield metrics_dir
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The metrics in the Prometheus text format, and its content type.

    With PROMETHEUS_MULTIPROC_DIR set (a server of several worker processes), the sum over all
    of them, whichever worker answers the scrape.
    """
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


@dataclass
class LagReadiness:
    """Ready: partitions assigned, and a fresh consumer lag at most `max_lag` records.

    The lag is the total over this process's partitions, set by a monitor thread every few
    seconds; older than `max_age_s` means the brokers stopped answering: not ready.
    """

    max_lag: int
    max_age_s: float
    assigned: frozenset[Any] = frozenset()
    lag: int | None = None
    at: float = field(default=0.0)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note_assigned(self, partitions: Iterable[Any]) -> None:
        """The partitions this process reads now."""
        with self._lock:
            self.assigned = frozenset(partitions)

    def note_lag(self, total: int, now: float | None = None) -> None:
        """The total lag the monitor just measured."""
        with self._lock:
            self.lag, self.at = total, time.monotonic() if now is None else now

    def check(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        """Whether ready, and why (the /readyz body)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            assigned, lag, at = self.assigned, self.lag, self.at
        info: dict[str, Any] = {"partitions": len(assigned), "lag": lag,
                                "maxLag": self.max_lag}
        if not assigned:
            return False, {**info, "reason": "no partitions assigned"}
        if lag is None or now - at > self.max_age_s:
            return False, {**info, "reason": "consumer lag unknown: the brokers did not answer"}
        if lag > self.max_lag:
            return False, {**info, "reason": f"consumer lag {lag} is above {self.max_lag}"}
        return True, info


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # a scrape every few seconds is not news


@dataclass
class ProbeServer:
    """`/metrics`, `/healthz` (the process is alive) and `/readyz` of a consumer process."""

    ready: Callable[[], tuple[bool, dict[str, Any]]]
    alive: Callable[[], bool] = lambda: True
    registry: CollectorRegistry = REGISTRY
    server: WSGIServer | None = None

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        """The WSGI app: three paths, everything else 404."""
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            body, ctype = exposition(self.registry)
            start_response("200 OK", [("Content-Type", ctype)])
            return [body]
        if path == "/healthz":
            ok, doc = self.alive(), {}
        elif path == "/readyz":
            ok, doc = self.ready()
        else:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [orjson.dumps({"error": {"code": "NOT_FOUND", "message": "no such path",
                                            "field": None}})]
        doc = {"status": ("ready" if path == "/readyz" else "ok") if ok else "unavailable",
               **doc}
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", "application/json")])
        return [orjson.dumps(doc)]

    def start(self, host: str, port: int) -> int:
        """Serve on a daemon thread; returns the port (useful with port 0)."""
        self.server = make_server(host, port, self.app, _Server, _QuietHandler)
        threading.Thread(target=self.server.serve_forever, name="metrics-http",
                         daemon=True).start()
        bound = int(self.server.server_address[1])
        log.info("metrics on http://%s:%d/metrics (and /healthz, /readyz)", host, bound)
        return bound

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
