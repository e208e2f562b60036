"""Serving a WSGI app with granian, the way both APIs do (`cartstream serve write|read`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from granian import Granian
from granian.constants import Interfaces
from granian.log import LogLevels


def logging_config(level: str, loggers: Sequence[str], quiet: Sequence[str] = ()) -> dict[str, Any]:
    """One stdout handler for granian and `loggers`; `quiet` loggers only log CRITICAL."""
    handler = {"formatter": "generic", "class": "logging.StreamHandler",
               "stream": "ext://sys.stdout"}
    own = {"handlers": ["console"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "generic": {"format": "%(asctime)s [%(levelname)s] %(name)s: %(message)s"},
            "access": {"format": "%(message)s"},
        },
        "handlers": {"console": handler, "access": {**handler, "formatter": "access"}},
        "loggers": {
            "_granian": dict(own),
            "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            **{name: dict(own) for name in loggers},
            **{name: {**own, "level": "CRITICAL"} for name in quiet},
        },
    }


def build_server(
    target: str,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    log_level: str,
    shutdown_timeout_s: int,
    loggers: Sequence[str],
    quiet: Sequence[str] = (),
    interface: Interfaces = Interfaces.WSGI,
    backpressure: int | None = None,
) -> Granian:
    """A granian server: `workers` processes x `threads` blocking threads each (WSGI), or
    `workers` processes with one event loop each (ASGI, threads=1)."""
    return Granian(
        target,
        address=host,
        port=port,
        interface=interface,
        workers=workers,
        blocking_threads=threads,
        # Bound the requests a worker holds at once (queued for a thread) so overload shows up
        # as latency at the client, not as unbounded memory here. An ASGI worker's event loop
        # holds thousands of waits and streams: its caller names the bound.
        backpressure=backpressure or max(threads * 8, 64),
        backlog=4096 if interface == Interfaces.ASGI else 1024,
        respawn_failed_workers=True,
        # A worker still importing the app when SIGTERM arrives misses it and would serve on:
        # without a kill timeout granian waits for it forever.
        workers_kill_timeout=shutdown_timeout_s,
        log_level=LogLevels(log_level.lower()),
        log_dictconfig=logging_config(log_level, loggers, quiet),
    )


WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def buffered(app: WsgiApp) -> Callable[[dict[str, Any], Any], list[bytes]]:
    """Wrap a WSGI app so it returns its body as one list item.

    Werkzeug answers with an iterator, which makes granian pull the body through Python a chunk
    at a time (about a fifth of a worker's GIL time on a cached-cart read); a list goes out in
    one native write. Every response here is a small JSON document, so nothing streams.
    """

    def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        result = app(environ, start_response)
        if isinstance(result, list):
            return result
        try:
            return [b"".join(result)]
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return wsgi
