"""The write API with a publisher that acknowledges at once: the add path's ceiling without Kafka.

`bench/write_api.py` serves this beside the real thing, on the same granian settings, so the
report separates what HTTP, Flask, validation and the catalog check cost from what Kafka adds.
With NOKAFKA_ACK_WAIT_MS set, each publish first sleeps that long (the time an ack takes):
what parking every request on its thread for the ack costs, without any Kafka client code.
Never a production entry point: it acknowledges events it does not store.

    python -m bench.write_nokafka   (WRITE_* variables as for `cartstream serve write`)
"""

from __future__ import annotations

import itertools
import os
import threading
import time

from cart_write.app import create_app
from cart_write.config import Config
from cart_write.publisher import Ack
from cart_write.server import build_server

TARGET = "bench.write_nokafka:app"


class InstantPublisher:
    """Acknowledges every record at once with increasing offsets; stores nothing."""

    def __init__(self, wait_s: float = 0.0) -> None:
        self._offsets = itertools.count()
        self._lock = threading.Lock()
        self._wait_s = wait_s

    def publish(self, topic: str, key: bytes, value: bytes) -> Ack:
        """An ack for a record that goes nowhere (after the configured wait)."""
        if self._wait_s:
            time.sleep(self._wait_s)
        with self._lock:
            return Ack(partition=0, offset=next(self._offsets))

    def ready(self) -> bool:
        """Always ready."""
        return True

    def close(self) -> None:
        """Nothing to release."""


app = create_app(Config.from_env(), publisher=InstantPublisher(
    float(os.environ.get("NOKAFKA_ACK_WAIT_MS", "0")) / 1000))


if __name__ == "__main__":
    build_server(Config.from_env(), TARGET).serve()
