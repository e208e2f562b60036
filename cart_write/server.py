"""The write API's server (`cartstream serve write`): granian (WSGI), configured from WRITE_*."""

from __future__ import annotations

import os
import shutil
import tempfile

from granian import Granian

from cart_web.metrics import MULTIPROC_ENV
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
    """Serve until SIGTERM/SIGINT.

    The workers share one fresh metrics directory (prometheus_client's multiprocess mode), set
    before any of them imports prometheus_client, so /metrics sums every worker. It is this
    server's own: another server on the machine, or a previous run, never adds to its counts.
    """
    metrics_dir = tempfile.mkdtemp(prefix="cartstream-write-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        build_server(config).serve()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
