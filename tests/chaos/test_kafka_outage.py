"""Scenario 3: the Kafka broker stops and restarts under writes (a private broker, never 9092).

While it is down the write API answers 503 KAFKA_UNAVAILABLE with Retry-After (never 500, never
a hang past the HTTP bound); afterwards 202 again, no acknowledged event is lost or doubled, and
every read model equals the fold of the log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from cart_contract import Product
from cart_write.config import Config as WriteConfig
from infra.topics import wait_for_broker
from tests.chaos.checks import Workload, check_system
from tests.chaos.conftest import running_system
from tests.e2e.conftest import System
from tests.integration.kafka_private import PrivateKafka

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Outage:
    """A system whose Kafka is a private broker the test may stop."""

    system: System
    catalog: dict[str, Product]
    kafka: PrivateKafka


@pytest.fixture(scope="module")
def outage(endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    """A private broker and a whole Cartstream on it (Redis and PostgreSQL stay shared)."""
    root = tmp_path_factory.mktemp("kafka-outage")
    kafka = PrivateKafka(root / "kafka")
    kafka.start()
    try:
        wait_for_broker(kafka.bootstrap, 90)
        with running_system(replace(endpoints, kafka_bootstrap=kafka.bootstrap),
                            root / "run") as (system, catalog):
            yield Outage(system, catalog, kafka)
    finally:
        kafka.stop(hard=True)


def test_broker_restart_gives_503_then_202_and_loses_no_acknowledged_event(
        outage: Outage, unique: str) -> None:
    """Scenario 3: kill -9 the broker during writes, restart it, check answers and read models."""
    system = outage.system
    # The longest a request may take: waiting for the ack, plus building a producer, plus slack.
    bounds = WriteConfig.from_env(system.env)
    http_bound = bounds.ack_timeout_s + bounds.max_block_ms / 1000 + 5
    wl = Workload(system.write_url, [f"kafka-{unique}-{i}" for i in range(60)],
                  list(outage.catalog), seed=int(unique, 16),
                  allowed=frozenset({202, 503}), timeout_s=http_bound)
    wl.start(threads=3, max_commands=6000)
    try:
        wl.wait_for(202, 100, since=0, timeout_s=60, system=system)
        outage.kafka.stop(hard=True)
        down_at = time.monotonic()
        wl.wait_for(503, 6, since=down_at, timeout_s=60, system=system)
        outage.kafka.start()
        up_at = time.monotonic()
        wl.wait_for(202, 100, since=up_at, timeout_s=120, system=system)
    finally:
        wl.stop()
    # Only 202 and well-formed 503s, every request answered within the bound.
    wl.assert_clean()
    assert wl.count(503) >= 6 and set(wl.statuses) == {202, 503}, wl.statuses
    check_system(system, outage.catalog, wl.acks)
