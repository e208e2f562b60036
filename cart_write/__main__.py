"""`python -m cart_write`: serve the write API with granian (WSGI), configured from the env."""

from __future__ import annotations

from typing import Any

from granian import Granian
from granian.constants import Interfaces
from granian.log import LogLevels

from cart_write.config import Config

WSGI_TARGET = "cart_write.wsgi:app"


def logging_config(level: str) -> dict[str, Any]:
    """One stdout handler for granian, our loggers and kafka-python (quieter)."""
    handler = {"formatter": "generic", "class": "logging.StreamHandler",
               "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "generic": {"format": "%(asctime)s [%(levelname)s] %(name)s: %(message)s"},
            "access": {"format": "%(message)s"},
        },
        "handlers": {
            "console": handler,
            "access": {**handler, "formatter": "access"},
        },
        "loggers": {
            "_granian": {"handlers": ["console"], "level": level, "propagate": False},
            "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "cart_write": {"handlers": ["console"], "level": level, "propagate": False},
            # kafka-python logs every reconnect attempt at WARNING/ERROR; ours say it once.
            "kafka": {"handlers": ["console"], "level": "CRITICAL", "propagate": False},
        },
    }


SHUTDOWN_TIMEOUT_S = 10


def build_server(config: Config) -> Granian:
    """A granian server for the WSGI app: `workers` processes x `threads` blocking threads."""
    return Granian(
        WSGI_TARGET,
        address=config.host,
        port=config.port,
        interface=Interfaces.WSGI,
        workers=config.workers,
        blocking_threads=config.threads,
        # Bound the requests a worker holds at once (queued for a thread) so overload shows up
        # as latency at the client, not as unbounded memory here.
        backpressure=max(config.threads * 8, 64),
        respawn_failed_workers=True,
        # A worker still importing the app when SIGTERM arrives misses it; without a kill
        # timeout granian waits for it forever (seen on the read API's server test).
        workers_kill_timeout=SHUTDOWN_TIMEOUT_S,
        log_level=LogLevels(config.log_level.lower()),
        log_dictconfig=logging_config(config.log_level),
    )


def main() -> None:
    """Read the config from the environment and serve until SIGTERM/SIGINT."""
    build_server(Config.from_env()).serve()


if __name__ == "__main__":
    main()
