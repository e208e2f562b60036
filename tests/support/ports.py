"""Ports for the servers the tests and benchmarks start: one definition of "free"."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def free_port_block(n: int, low: int = 20000, high: int = 30000) -> int:
    """An even port p such that p .. p+n-1 are all free (process i of a cluster takes p + i).

    Below the ephemeral range: the port after an ephemeral one is often some client
    connection's by the time the process binds it."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - n, 2)
        if all(bindable(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no block of {n} free ports in {low}..{high}")
