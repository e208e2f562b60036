"""The write API's server (`cartstream serve write`): granian (WSGI), configured from WRITE_*."""

from __future__ import annotations

from granian import Granian

from cart_web.metrics import own_multiprocess_dir
from cart_web.server import build_server as _build_server
from cart_write.config import Config

WSGI_TARGET = "cart_write.wsgi:app"
SHUTDOWN_TIMEOUT_S = 10


def build_server(config: Config, target: str = WSGI_TARGET) -> Granian:
    """A granian server for the WSGI app: `workers` processes x `threads` blocking threads."""
    return _build_server(
        target, host=config.host, port=config.port, workers=config.workers,
        threads=config.threads, log_level=config.log_level,
        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S, loggers=["cart_write"],
        # librdkafka logs every reconnect attempt (through "kafka.librdkafka"); the
        # publisher says it once.
        quiet=["kafka"],
    )


def serve(config: Config) -> None:
    """Serve until SIGTERM/SIGINT; /metrics sums every worker (own_multiprocess_dir)."""
    with own_multiprocess_dir("write"):
        build_server(config).serve()
