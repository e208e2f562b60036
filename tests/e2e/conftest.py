"""A whole Cartstream per test module: every service as a real process on private topics.

Each system gets its own topics, consumer groups, PostgreSQL database, Redis database index
and state directory, so e2e tests never see each other's data nor the developer's `make up`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
import requests
from confluent_kafka.admin import AdminClient

from infra.topics import ensure_topics, topic_specs

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "write-api": ["-m", "cartstream", "serve", "write"],
    "aggregator": ["-m", "cartstream", "aggregate"],
    "sink-redis": ["-m", "cartstream", "sink", "redis"],
    "sink-postgres": ["-m", "cartstream", "sink", "postgres"],
    "sink-catalog": ["-m", "cartstream", "sink", "catalog"],
    "sink-reservations": ["-m", "cartstream", "sink", "reservations"],
    "read-api": ["-m", "cartstream", "serve", "read"],
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_db(url: str, db: str) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path=f"/{db}"))


@dataclass
class System:
    """A running Cartstream: its environment, processes and HTTP endpoints."""

    env: dict[str, str]
    run_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def write_url(self) -> str:
        """Base URL of the write API."""
        return f"http://127.0.0.1:{self.env['WRITE_PORT']}"

    @property
    def read_url(self) -> str:
        """Base URL of the read API."""
        return f"http://127.0.0.1:{self.env['READ_PORT']}"

    def start(self, name: str) -> None:
        """Start one service (again) with the system's environment."""
        log = open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, *SERVICES[name]], cwd=ROOT, env=self.env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a service's whole process group and wait for it."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)

    def stop_all(self) -> None:
        """Terminate every service, politely first."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill(name)

    def wait_healthy(self, timeout_s: float = 60) -> None:
        """Wait until both APIs answer /healthz and every service is still alive."""
        deadline = time.monotonic() + timeout_s
        for url in (self.write_url, self.read_url):
            while True:
                self.assert_alive()
                try:
                    if requests.get(f"{url}/healthz", timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} not healthy; logs in {self.run_dir}")
                time.sleep(0.2)

    def assert_alive(self) -> None:
        """Fail with the service's log tail if any service has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.run_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")


def make_system(endpoints, run_dir: Path) -> System:
    """Environment for a private Cartstream on the shared servers."""
    tag = uuid.uuid4().hex[:8]
    db = f"e2e_{tag}"
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    redis_url = urlunparse(urlparse(endpoints.redis_url)._replace(path="/1"))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "REDIS_URL": redis_url,
        "DATABASE_URL": _with_db(endpoints.database_url, db),
        "TOPIC_CART_EVENTS": f"e2e-{tag}-cart-events",
        "TOPIC_PRODUCTS": f"e2e-{tag}-products",
        "TOPIC_CART_DETAILS": f"e2e-{tag}-cart-details",
        "TOPIC_DEAD_LETTER": f"e2e-{tag}-dead-letter",
        "TOPIC_CART_RESERVATIONS": f"e2e-{tag}-cart-reservations",
        "TOPIC_PRODUCT_RESERVATIONS": f"e2e-{tag}-product-reservations",
        "CONSUMER_GROUP_PREFIX": f"e2e-{tag}",
        "REDIS_KEY_PREFIX": f"e2e-{tag}:",
        "WRITE_PORT": str(free_port()),
        "READ_PORT": str(free_port()),
        "AGG_METRICS_PORT": str(free_port()),
        "RUN_DIR": str(run_dir),
        "PYTHONUNBUFFERED": "1",
    }
    admin = AdminClient({"bootstrap.servers": endpoints.kafka_bootstrap})
    ensure_topics(admin, topic_specs(env))
    return System(env=env, run_dir=run_dir)


@pytest.fixture(scope="module")
def system(endpoints, tmp_path_factory) -> Iterator[System]:
    """A fresh, running Cartstream for one test module."""
    sys_ = make_system(endpoints, tmp_path_factory.mktemp("cartstream"))
    try:
        for name in SERVICES:
            sys_.start(name)
        sys_.wait_healthy()
        yield sys_
    finally:
        sys_.stop_all()
