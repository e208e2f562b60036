"""Where tests find their servers.

Order of preference, per the project's rules:
1. endpoints given in the environment (KAFKA_BOOTSTRAP, REDIS_URL, DATABASE_URL);
2. testcontainers, when a Docker engine answers;
3. the local stack that `make infra` starts (started here, once, if it is not running).
Unit tests request none of these fixtures, so they never touch I/O.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Endpoints:
    """Addresses of the real servers a test talks to."""

    kafka_bootstrap: str
    redis_url: str
    database_url: str
    source: str


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _local_defaults() -> Endpoints:
    return Endpoints(
        kafka_bootstrap=f"localhost:{os.environ.get('KAFKA_PORT', '9092')}",
        redis_url=f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0",
        database_url=(
            f"postgresql://cartstream@127.0.0.1:{os.environ.get('PG_PORT', '5432')}/cartstream"
        ),
        source="local stack",
    )


def _local_stack() -> Endpoints:
    eps = _local_defaults()
    kafka_port = int(eps.kafka_bootstrap.rsplit(":", 1)[1])
    ports = [kafka_port, urlparse(eps.redis_url).port, urlparse(eps.database_url).port]
    if not all(_reachable("127.0.0.1", p) for p in ports):
        subprocess.run(["bash", str(ROOT / "infra" / "stack.sh"), "infra"], check=True)
    return eps


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    """The Kafka, Redis and PostgreSQL endpoints for this test session."""
    env = os.environ
    if all(k in env for k in ("KAFKA_BOOTSTRAP", "REDIS_URL", "DATABASE_URL")):
        yield Endpoints(
            env["KAFKA_BOOTSTRAP"], env["REDIS_URL"], env["DATABASE_URL"], "environment"
        )
        return
    if env.get("CARTSTREAM_TESTCONTAINERS", "auto") != "off" and _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer
        from testcontainers.redis import RedisContainer

        with (
            KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka,
            RedisContainer("redis:7") as redis_c,
            PostgresContainer("postgres:15", driver=None) as pg,
        ):
            redis_url = (
                f"redis://{redis_c.get_container_host_ip()}:{redis_c.get_exposed_port(6379)}/0"
            )
            yield Endpoints(kafka.get_bootstrap_server(), redis_url, pg.get_connection_url(),
                            "testcontainers")
        return
    yield _local_stack()


@pytest.fixture(scope="session")
def kafka_bootstrap(endpoints: Endpoints) -> str:
    """Bootstrap servers of a broker whose Cartstream topics exist."""
    from infra.topics import ensure_topics, topic_specs, wait_for_broker

    admin = wait_for_broker(endpoints.kafka_bootstrap, 60)
    ensure_topics(admin, topic_specs())
    return endpoints.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(endpoints: Endpoints) -> str:
    """URL of a real Redis server."""
    return endpoints.redis_url


@pytest.fixture(scope="session")
def database_url(endpoints: Endpoints) -> str:
    """URL of a real PostgreSQL database."""
    return endpoints.database_url


@pytest.fixture
def unique() -> str:
    """A random id, so tests share servers without teardown."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def scratch_topic(kafka_bootstrap: str, unique: str) -> str:
    """A fresh single-partition topic for one test."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"test-{unique}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)
    return name
