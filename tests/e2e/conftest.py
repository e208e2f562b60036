"""A whole Cartstream per test module: every service as a real process on private topics.

Each system gets its own topics, consumer groups, PostgreSQL database, Redis database index
and state directory, so e2e tests never see each other's data nor the developer's `make up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse, urlunparse

import psycopg
import pytest
import requests
from confluent_kafka.admin import AdminClient

from cart_contract.settings import KafkaClientSettings
from cart_web.auth import issue_token
from cart_web.settings import AuthSettings
from infra.topics import ensure_topics, topic_specs
from tests.support.kafka_secure import Principals, SecureKafka, principals
from tests.support.ports import free_port

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


def _with_db(url: str, db: str) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path=f"/{db}"))


@dataclass
class System:
    """A running Cartstream: its environment, processes and HTTP endpoints."""

    env: dict[str, str]
    run_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # On a SASL broker: the system's own principals, one per service (tests/support).
    principals: Principals | None = None

    def kafka(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings for the tests' own clients (the admin principal when SASL)."""
        if self.principals is None:
            return {"bootstrap.servers": self.env["KAFKA_BOOTSTRAP"], **extra}
        return {**self.principals.kafka.admin, **extra}

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
        env = self.env
        if self.principals is not None:  # each service as its own principal
            env = {**env, **self.principals.service_env(name)}
        self.procs[name] = subprocess.Popen(
            [sys.executable, *SERVICES[name]], cwd=ROOT, env=env, stdout=log,
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

    def token(self, customer: str | None = None, *, admin: bool = False, ttl_s: int = 3600
              ) -> str:
        """A bearer token for the secure profile, signed with this system's generated key."""
        settings = AuthSettings(profile="secure", run_dir=self.run_dir)
        return issue_token(settings, customer or "admin/e2e", admin=admin, ttl_s=ttl_s)

    def auth(self, customer: str | None = None, *, admin: bool = False) -> dict[str, str]:
        """The Authorization header of `token`."""
        return {"Authorization": f"Bearer {self.token(customer, admin=admin)}"}

    def assert_alive(self) -> None:
        """Fail with the service's log tail if any service has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.run_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")


def make_system(endpoints, run_dir: Path, extra: dict[str, str] | None = None,
                kafka: SecureKafka | None = None) -> System:
    """Environment for a private Cartstream on the shared servers (`extra` added last).

    With `kafka` (a SASL broker), the system runs there, each service as its own principal
    with the ACLs of infra/kafka_acl.py for the system's topics and groups.
    """
    tag = uuid.uuid4().hex[:8]
    db = f"e2e_{tag}"
    with psycopg.connect(endpoints.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    redis_url = urlunparse(urlparse(endpoints.redis_url)._replace(path="/1"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KAFKA_SASL_")},
        "KAFKA_BOOTSTRAP": kafka.bootstrap if kafka else endpoints.kafka_bootstrap,
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
        **{f"SINK_{sink.upper()}_METRICS_PORT": str(free_port())
           for sink in ("redis", "postgres", "catalog", "reservations")},
        # An add the write API let through for an unknown product (its catalog check fails
        # open when Redis is slow) is refused after this wait: shorter than read_after's 30 s.
        "AGG_PRODUCT_WAIT_S": "5",
        "RUN_DIR": str(run_dir),
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }
    if kafka is None:
        ensure_topics(AdminClient({"bootstrap.servers": endpoints.kafka_bootstrap}),
                      topic_specs(env))
        return System(env=env, run_dir=run_dir)
    env.pop("KAFKA_SECURITY_PROTOCOL", None)  # per service (System.start)
    ensure_topics(AdminClient(kafka.admin), topic_specs(env))
    return System(env=env, run_dir=run_dir,
                  principals=principals(kafka, f"e2e-{tag}-", run_dir, env))


def _sasl_from_environment() -> bool:
    return os.environ.get("KAFKA_SECURITY_PROTOCOL") == "SASL_PLAINTEXT"


@pytest.fixture(scope="session")
def secure_kafka(endpoints, tmp_path_factory) -> Iterator[SecureKafka]:
    """A broker in the secure profile: the endpoints' own when the environment says it runs
    SASL (its admin principal in KAFKA_SASL_*), else a private one for this session."""
    if _sasl_from_environment():
        admin = KafkaClientSettings.from_env().kafka_client()
        yield SecureKafka(endpoints.kafka_bootstrap,
                          {**admin, "bootstrap.servers": endpoints.kafka_bootstrap})
        return
    from tests.integration.kafka_private import PrivateKafka

    broker = PrivateKafka(tmp_path_factory.mktemp("kafka-sasl"), secure=True)
    broker.start(timeout_s=300)  # a loaded machine takes minutes to start a JVM
    with broker:
        yield SecureKafka(broker.bootstrap, broker.admin_config())


# The secure profile as the secure e2e tests run it: low limits, so bursts reach them.
SECURE_ENV = {
    "CARTSTREAM_PROFILE": "secure",
    "CORS_ORIGINS": "https://shop.example",
    "RATE_LIMIT_COMMANDS": "30",
    "RATE_LIMIT_WAITS": "30",
    "MAX_WAITS_PER_PRINCIPAL": "1",
}


# `CARTSTREAM_E2E_PROFILE=secure` runs the whole e2e suite against secure systems (.ci/run
# does both): every request the tests make gets the token its customer would send.
E2E_PROFILE = os.environ.get("CARTSTREAM_E2E_PROFILE", "dev")
SUITE_SECURE_ENV = {"CARTSTREAM_PROFILE": "secure", "RATE_LIMIT_COMMANDS": "1000000",
                    "RATE_LIMIT_WAITS": "1000000", "MAX_WAITS_PER_PRINCIPAL": "1000"}


@pytest.fixture(scope="module")
def system(endpoints, tmp_path_factory, request) -> Iterator[System]:
    """A fresh, running Cartstream for one test module (in CARTSTREAM_E2E_PROFILE).

    Secure systems run on a SASL broker (`secure_kafka`), each service as its principal.
    """
    secure = E2E_PROFILE == "secure"
    kafka = (request.getfixturevalue("secure_kafka")
             if secure or _sasl_from_environment() else None)
    sys_ = make_system(endpoints, tmp_path_factory.mktemp("cartstream"),
                       SUITE_SECURE_ENV if secure else None, kafka)
    with contextlib.ExitStack() as stack:
        if secure:
            stack.enter_context(tokens_attached(sys_))
        yield from _running(sys_)


def _customer_of(sys_: System, url: str, kwargs: dict[str, Any]) -> str | None:
    """The customer a test request acts for (None: an admin's request)."""
    path = urlparse(url).path
    if url.startswith(sys_.write_url):
        body = kwargs.get("json")
        if body is None and kwargs.get("data"):
            try:
                body = json.loads(kwargs["data"])
            except (ValueError, TypeError, RecursionError):  # fuzzed bodies: any token
                body = None
        customer = body.get("customerId") if isinstance(body, dict) else None
        return str(customer) if isinstance(customer, str | int) else None
    if url.startswith(sys_.read_url) and path.startswith("/api/v1/"):
        first = unquote(path[len("/api/v1/"):].split("/", 1)[0])
        return None if first in ("carts", "products") else first
    return None


@contextlib.contextmanager
def tokens_attached(sys_: System) -> Iterator[None]:
    """Every `requests` call to this system carries a bearer token for its customer."""
    original = requests.Session.request
    tokens: dict[str | None, str] = {}

    def request(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any
                ) -> requests.Response:
        headers = dict(kwargs.get("headers") or {})
        if url.startswith((sys_.write_url, sys_.read_url)) and not any(
                k.lower() == "authorization" for k in headers):
            customer = _customer_of(sys_, url, kwargs)
            if customer not in tokens:
                tokens[customer] = sys_.token(customer, admin=customer is None)
            headers["Authorization"] = f"Bearer {tokens[customer]}"
            kwargs["headers"] = headers
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = request  # type: ignore[method-assign]
    try:
        yield
    finally:
        requests.Session.request = original  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def secure_system(endpoints, tmp_path_factory, secure_kafka) -> Iterator[System]:
    """A fresh, running Cartstream in the secure profile (its secrets under its run_dir), on a
    SASL broker, each service as its own principal."""
    yield from _running(make_system(endpoints, tmp_path_factory.mktemp("cartstream-secure"),
                                    SECURE_ENV, secure_kafka))


def _running(sys_: System) -> Iterator[System]:
    try:
        for name in SERVICES:
            sys_.start(name)
        sys_.wait_healthy()
        yield sys_
    finally:
        sys_.stop_all()
