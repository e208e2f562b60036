"""A private Cartstream for the chaos scenarios, on a Redis of its own it may kill and empty."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cart_contract import Product
from tests.chaos.checks import load_catalog, make_catalog
from tests.e2e.conftest import SERVICES, System, make_system
from tests.support.connectors import PrivateRedis

# Measurements the scenarios make (e.g. the cluster's failover times), printed in the summary.
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the chaos scenarios measured, after the results."""
    if REPORT:
        terminalreporter.section("chaos measurements")
        for line in REPORT:
            terminalreporter.write_line(line)


# Quick snapshots and retries: a resumed aggregator re-emits little, a sink is back within a second.
CHAOS_ENV = {
    "AGG_SNAPSHOT_INTERVAL_S": "1",
    "AGG_BACKUP_INTERVAL_S": "0",
    "AGG_PRODUCT_WAIT_S": "5",
    "SINK_RETRY_MAX_S": "1",
}


@dataclass
class Chaos:
    """A running system, its constant catalog and the private Redis it uses."""

    system: System
    catalog: dict[str, Product]
    redis: PrivateRedis

    def restart_redis_empty(self) -> None:
        """kill -9 the Redis server, delete its data and start it again on the same port."""
        self.redis.kill()
        for child in self.redis.data_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
        self.redis.start()


def mkdir(path: Path) -> Path:
    """The directory, created."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_system(system: System) -> None:
    """Start every service and wait until both APIs answer."""
    for name in SERVICES:
        system.start(name)
    system.wait_healthy()


@contextmanager
def running_system(endpoints, run_dir: Path, extra: dict[str, str] | None = None
                   ) -> Iterator[tuple[System, dict[str, Product]]]:
    """A started Cartstream on `endpoints` with the chaos settings and its catalog loaded
    (`extra`: more environment, e.g. the cluster's replication factor)."""
    system = make_system(endpoints, mkdir(run_dir), extra)
    system.env.update(CHAOS_ENV)
    try:
        start_system(system)
        catalog = make_catalog()
        load_catalog(system, catalog)
        yield system, catalog
    finally:
        system.stop_all()


@pytest.fixture(scope="module")
def chaos(endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    """A fresh Cartstream for one module, its catalog loaded before any workload."""
    root: Path = tmp_path_factory.mktemp("chaos")
    with PrivateRedis(root / "redis") as private_redis, running_system(
            replace(endpoints, redis_url=private_redis.url), root / "run") as (system, catalog):
        yield Chaos(system, catalog, private_redis)
