"""compose.yaml runs what `make up PROFILE=secure` runs: the same services, topics, principals,
users, roles and secrets (no Docker engine here, so its file is checked against the tables)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cart_contract import topics
from infra import compose_exec, kafka_acl, pg_roles, redis_acl

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
STACK_SERVICES = re.findall(r'^  "([a-z-]+)\|', (ROOT / "infra" / "stack.sh").read_text(), re.M)


def _env(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[name].get("environment", {}).items()}


def test_it_runs_every_service_of_the_stack_in_the_secure_profile() -> None:
    assert set(STACK_SERVICES) <= set(SERVICES)
    for name in STACK_SERVICES:
        assert _env(name)["CARTSTREAM_PROFILE"] == "secure", name


def test_the_topics_are_the_contract_s() -> None:
    env = _env("topics")
    assert {env[k] for k in env if k.startswith("TOPIC_")} == {
        topics.CART_EVENTS, topics.PRODUCT_DETAILS, topics.CART_DETAILS, topics.DEAD_LETTER,
        topics.CART_RESERVATIONS, topics.PRODUCT_RESERVATIONS}


def test_every_secret_is_a_docker_secret_of_the_generated_file() -> None:
    declared = COMPOSE["secrets"]
    names = {"jwt-hs256",
             *(kafka_acl.secret_name(p) for p in kafka_acl.PRINCIPALS),
             *(redis_acl.secret_name(u) for u in (redis_acl.DEFAULT_USER, *redis_acl.USERS)),
             *(pg_roles.secret_name(k) for k in pg_roles.KINDS)}
    assert set(declared) == names
    assert all(declared[n] == {"file": f".run/secrets/{n}"} for n in names)
    # No password in the file itself: only *_FILE paths and secrets.
    text = (ROOT / "compose.yaml").read_text()
    assert not re.search(r"(?i)(PASSWORD|SECRET):\s*[^/\s]", text.replace("_FILE:", "_FILE"))


def test_each_service_is_its_own_kafka_principal_with_only_its_secrets() -> None:
    for name in STACK_SERVICES:
        env, mounted = _env(name), set(SERVICES[name].get("secrets", []))
        principal = kafka_acl.SERVICE_PRINCIPALS[name]
        expected = set()
        if principal is not None:
            assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
            assert env["KAFKA_SASL_USERNAME"] == principal, name
            secret = kafka_acl.secret_name(principal)
            assert env["KAFKA_SASL_PASSWORD_FILE"] == f"/run/secrets/{secret}", name
            expected.add(secret)
        user = redis_acl.SERVICE_USERS.get(name)
        kind = pg_roles.SERVICE_ROLES.get(name)
        if user:
            expected.add(redis_acl.secret_name(user))
        if kind:
            expected.add(pg_roles.secret_name(kind))
        if user or kind:  # its URLs get its own credentials (infra/compose_exec.py)
            assert SERVICES[name]["command"][:4] == ["python", "-m", "infra.compose_exec", name]
        if name in ("write-api", "read-api"):
            expected.add("jwt-hs256")
        assert mounted == expected, name
    for job, principal in (("topics", "admin"), ("catalog", kafka_acl.CATALOG)):
        assert _env(job)["KAFKA_SASL_USERNAME"] == principal
        assert SERVICES[job]["secrets"] == [kafka_acl.secret_name(principal)]


def test_the_broker_is_the_secure_profile_s() -> None:
    env = _env("kafka")
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == "User:admin"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}
    assert "CONTROLLER://127.0.0.1:" in env["KAFKA_LISTENERS"]
    assert SERVICES["kafka-acl"]["command"][:4] == ["python", "-m", "infra.kafka_acl", "configure"]
    assert set(SERVICES["kafka-acl"]["secrets"]) == {
        kafka_acl.secret_name(p) for p in kafka_acl.PRINCIPALS}
    assert SERVICES["redis"]["command"][-2:] == ["--aclfile", "/acl/users.acl"]
    assert _env("postgres")["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg-superuser"


def test_compose_exec_puts_only_the_service_s_credentials_into_its_urls(tmp_path: Path) -> None:
    for name, value in (("redis-read-api", "r-pw"), ("pg-read", "p-pw")):
        (tmp_path / name).write_text(value + "\n")
    env = {"REDIS_URL": "redis://redis:6379/0",
           "DATABASE_URL": "postgresql://cartstream@postgres:5432/cartstream", "X": "y"}
    out = compose_exec.service_env("read-api", env, tmp_path)
    assert out["REDIS_URL"] == "redis://read-api:r-pw@redis:6379/0"
    assert out["DATABASE_URL"] == "postgresql://cartstream_read:p-pw@postgres:5432/cartstream"
    assert out["X"] == "y"
    assert compose_exec.service_env("aggregator", env, tmp_path) == env  # no store credentials
