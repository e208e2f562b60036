"""The read API's server (`cartstream serve read`): granian (ASGI), configured from READ_*."""

from __future__ import annotations

from granian import Granian
from granian.constants import Interfaces

from cart_read.config import Config
from cart_web.metrics import own_multiprocess_dir
from cart_web.server import build_server as _build_server

ASGI_TARGET = "cart_read.asgi:app"


def build_server(config: Config) -> Granian:
    """A granian server for the ASGI app: `workers` processes, one event loop each."""
    return _build_server(
        ASGI_TARGET, host=config.host, port=config.port, workers=config.workers,
        threads=1, log_level=config.log_level, interface=Interfaces.ASGI,
        # Every open wait and stream is a request in flight, plus room for plain reads.
        backpressure=config.max_waiters + 1024,
        shutdown_timeout_s=config.shutdown_timeout_s, loggers=["cart_read"],
    )


def serve(config: Config) -> None:
    """Serve until SIGTERM/SIGINT (granian stops its workers gracefully)."""
    with own_multiprocess_dir("read"):
        build_server(config).serve()
