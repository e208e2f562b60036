"""The secure profile's Kafka principals: who may do what, named from the settings, and the
client settings every process builds its Kafka configuration from."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from cart_contract.settings import ConfigError, KafkaClientSettings, client_config
from infra import kafka_acl

ROOT = Path(__file__).resolve().parents[2]

# The least privilege, spelled out: a change to GRANTS must change this too.
EXPECTED = {
    "write-api": [("WRITE", "topic", "cart-events")],
    "aggregator": [
        ("READ", "topic", "cart-events"),
        ("READ", "topic", "product-details-events"),
        ("READ", "topic", "cart-reservations"),
        ("WRITE", "topic", "cart-reservations"),
        ("WRITE", "topic", "product-reservations"),
        ("WRITE", "topic", "cart-details-event"),
        ("WRITE", "topic", "cartstream-dead-letter"),
        ("READ", "group", "BYTEWAX_IGNORED"),
        ("READ", "group", "cartstream-aggregator-lag"),
    ],
    "sink-redis": [("READ", "topic", "cart-details-event"), ("READ", "group", "cartstream-redis"),
                   ("WRITE", "topic", "cartstream-dead-letter")],
    "sink-postgres": [("READ", "topic", "cart-details-event"),
                      ("READ", "group", "cartstream-postgres"),
                      ("WRITE", "topic", "cartstream-dead-letter")],
    "sink-catalog": [("READ", "topic", "product-details-events"),
                     ("READ", "group", "cartstream-catalog"),
                     ("WRITE", "topic", "cartstream-dead-letter")],
    "sink-reservations": [("READ", "topic", "product-reservations"),
                          ("READ", "group", "cartstream-reservations"),
                          ("WRITE", "topic", "cartstream-dead-letter")],
    "catalog": [("WRITE", "topic", "product-details-events")],
}


def test_each_principal_gets_exactly_what_it_uses() -> None:
    assert kafka_acl.resolve({}) == EXPECTED
    # Only the catalog loader and the aggregator's inputs touch the products; only the write
    # API writes the event store.
    writers = {p for p, rows in EXPECTED.items() if ("WRITE", "topic", "cart-events") in rows}
    assert writers == {"write-api"}


def test_the_names_follow_the_settings() -> None:
    env = {"TOPIC_CART_EVENTS": "t-events", "TOPIC_PRODUCTS": "t-products",
           "TOPIC_DEAD_LETTER": "t-dead", "CONSUMER_GROUP_PREFIX": "g"}
    got = kafka_acl.resolve(env)
    assert got["write-api"] == [("WRITE", "topic", "t-events")]
    assert got["catalog"] == [("WRITE", "topic", "t-products")]
    assert got["sink-catalog"] == [("READ", "topic", "t-products"), ("READ", "group", "g-catalog"),
                                   ("WRITE", "topic", "t-dead")]


def test_bindings_are_literal_allows_for_prefixed_users() -> None:
    from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType

    found = kafka_acl.bindings({}, user_prefix="e2e-x-")
    assert len(found) == sum(len(rows) for rows in EXPECTED.values())
    assert {b.principal for b in found} == {f"User:e2e-x-{p}" for p in EXPECTED}
    assert all(b.resource_pattern_type == ResourcePatternType.LITERAL for b in found)
    assert all(b.permission_type == AclPermissionType.ALLOW and b.host == "*" for b in found)
    assert {b.operation for b in found} == {AclOperation.READ, AclOperation.WRITE}
    # No principal is given a cluster-wide right; the admin has no ACL (it is the super user).
    assert not [b for b in found if b.name == "kafka-cluster" or "admin" in b.principal]


def test_passwords_are_generated_private_and_named_per_principal(tmp_path: Path) -> None:
    secrets = kafka_acl.passwords(tmp_path)
    assert set(secrets) == {"admin", *EXPECTED}
    assert len(set(secrets.values())) == len(secrets)
    for principal in secrets:
        path = tmp_path / "secrets" / f"kafka-{principal}"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kafka_acl.passwords(tmp_path) == secrets  # kept, not regenerated


def test_every_kafka_process_of_the_stack_has_a_principal() -> None:
    stack = (ROOT / "infra" / "stack.sh").read_text()
    services = re.findall(r'^  "([a-z-]+)\|', stack, flags=re.M)
    assert "aggregator" in services and "read-api" in services
    assert set(services) <= set(kafka_acl.SERVICE_PRINCIPALS)
    assert kafka_acl.service_env(Path("/r"), "read-api") == {}
    assert kafka_acl.service_env(Path("/r"), "sink-redis") == {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "sink-redis",
        "KAFKA_SASL_PASSWORD_FILE": "/r/secrets/kafka-sink-redis"}
    assert kafka_acl.SERVICE_PRINCIPALS["topics"] == "admin"
    assert kafka_acl.SERVICE_PRINCIPALS["replay"] == "admin"


def test_the_secure_broker_denies_by_default_and_keeps_its_listeners_on_loopback() -> None:
    props = dict(line.split("=", 1) for line in
                 (ROOT / "infra" / "kafka" / "server-secure.properties.in").read_text().splitlines()
                 if line and not line.startswith("#"))
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:@KAFKA_ADMIN_USER@"
    listeners = props["listeners"].split(",")
    assert all("//127.0.0.1:" in entry for entry in listeners) and len(listeners) == 3
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}  # no PLAINTEXT, so no anonymous
    assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"


def test_sasl_settings_need_a_user_and_a_password() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SASL_USERNAME"):
        KafkaClientSettings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                      "KAFKA_SASL_USERNAME": "write-api"})
    assert KafkaClientSettings.from_env({}).kafka_client() == {
        "bootstrap.servers": "localhost:9092"}


def test_the_password_comes_from_its_file_and_never_shows(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-value\n")
    cfg = KafkaClientSettings.from_env({
        "KAFKA_BOOTSTRAP": "k:1", "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_USERNAME": "catalog", "KAFKA_SASL_PASSWORD_FILE": str(secret)})
    assert cfg.kafka_client() == {
        "bootstrap.servers": "k:1", "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "catalog",
        "sasl.password": "s3cret-value"}
    direct = cfg.replace(kafka_sasl_password="other", kafka_sasl_password_file=None)
    assert direct.kafka_client()["sasl.password"] == "other"
    assert "other" not in repr(direct) and "other" not in str(direct)
    assert client_config("a:1") == {"bootstrap.servers": "a:1"}


def _wrapper_args(env: dict[str, str], *args: str, principal: str = "catalog") -> list[str]:
    script = (f"source {ROOT}/infra/kafka/bin/client-config.sh; "
              f'client_config_args {principal} "$@"')
    out = subprocess.run(["bash", "-c", script, "_", *args], env=env, capture_output=True,
                         text=True, check=True).stdout
    return out.split("\n")[:-1] if out else []


def test_the_tool_wrappers_pass_the_principal_config_only_when_there_is_one(
        tmp_path: Path) -> None:
    env = {"RUN_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    assert _wrapper_args(env, "--topic", "t") == []  # dev: nothing written, nothing passed
    conf = kafka_acl.client_config_path(tmp_path, "catalog")
    kafka_acl.write_private(conf, kafka_acl.client_properties("localhost:1", "catalog", "pw"))
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert _wrapper_args(env, "--topic", "t") == ["--command-config", str(conf)]
    assert _wrapper_args(env, "--command-config", "mine.properties") == []  # the caller's wins
    assert _wrapper_args(env, "--list", principal="admin") == []  # no admin config written
    explicit = {**env, "KAFKA_CLIENT_CONFIG": str(conf)}
    assert _wrapper_args(explicit, "--list", principal="admin") == ["--command-config", str(conf)]
    text = conf.read_text()
    assert 'username="catalog" password="pw"' in text and "SCRAM-SHA-512" in text
