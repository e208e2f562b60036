"""The read API's server (`cartstream serve read`): granian (WSGI), configured from READ_*."""

from __future__ import annotations

from granian import Granian

from cart_read.config import Config
from cart_web.server import build_server as _build_server

WSGI_TARGET = "cart_read.wsgi:app"


def build_server(config: Config) -> Granian:
    """A granian server for the WSGI app: `workers` processes x `threads` blocking threads."""
    # Few threads: p99 measured far better with 8 than with granian's default (256). They also
    # bound the read-your-write waiters, each of which holds one.
    return _build_server(
        WSGI_TARGET, host=config.host, port=config.port, workers=config.workers,
        threads=config.threads, log_level=config.log_level,
        shutdown_timeout_s=config.shutdown_timeout_s, loggers=["cart_read"],
    )


def serve(config: Config) -> None:
    """Serve until SIGTERM/SIGINT (granian stops its workers gracefully)."""
    build_server(config).serve()
