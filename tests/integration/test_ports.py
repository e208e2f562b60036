"""The suite's free ports: distinct within a process, and out of the ephemeral range."""

from __future__ import annotations

import socket

import pytest

from tests.support.ports import HIGH, free_port, free_port_block

pytestmark = pytest.mark.integration


def ephemeral_range() -> range:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())
    return range(low, high + 1)


def test_free_ports_are_never_handed_out_twice() -> None:
    # An e2e system takes seven ports one call at a time: two of its servers once got the same.
    ports = [free_port() for _ in range(800)]
    assert len(set(ports)) == len(ports)


def test_free_ports_stay_out_of_the_ephemeral_range_and_can_be_bound() -> None:
    ephemeral = ephemeral_range()
    base = free_port_block(6)
    for port in [free_port(), *range(base, base + 6)]:
        assert port < HIGH and port not in ephemeral
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
