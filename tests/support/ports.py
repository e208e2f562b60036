"""Ports for the servers the tests and benchmarks start: one definition of "free"."""

from __future__ import annotations

import random
import socket

# Below Linux's ephemeral range (32768+): a port taken from there is often some client
# connection's by the time the server binds it.
LOW, HIGH = 20000, 30000

# Ports this process has handed out. Two calls must never return the same port: a system's
# read API and a sink's metrics server once got one port between them (both looked free,
# neither was bound yet), and the tests talked to the metrics server as if it were the API.
_handed_out: set[int] = set()
_rng = random.Random()


def bindable(port: int) -> bool:
    """True when a server could listen on the port now (SO_REUSEADDR, as Kafka binds: the
    connections a killed broker leaves in TIME_WAIT do not hold its port)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(n: int, low: int = LOW, high: int = HIGH) -> int:
    """An even port p such that p .. p+n-1 are all free and none was handed out before by
    this process (process i of a cluster takes p + i)."""
    for _ in range(500):
        base = _rng.randrange(low, high - n, 2)
        block = range(base, base + n)
        if not _handed_out.intersection(block) and all(bindable(p) for p in block):
            _handed_out.update(block)
            return base
    raise RuntimeError(f"no block of {n} free ports in {low}..{high}")


def free_port() -> int:
    """A TCP port nobody listens on right now, and one this process has not handed out."""
    return free_port_block(1)
