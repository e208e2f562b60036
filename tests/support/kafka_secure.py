"""A SASL/SCRAM broker with ACLs for tests of the secure profile, and systems' principals on it.

`SecureKafka` is the broker and the admin principal's client settings: the developer's stack
when the environment says it runs secure (KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT and the admin's
KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD[_FILE]), else a private broker (PrivateKafka, secure).
`principals` gives one system its own principals (`<prefix><principal>`), their passwords under
its run dir, and the ACLs of infra/kafka_acl.py for its own topic and group names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from infra import kafka_acl


@dataclass(frozen=True)
class SecureKafka:
    """A broker in the secure profile: its client listener and the admin's client settings."""

    bootstrap: str
    admin: dict[str, Any]

    def client(self, user: str, password: str, **extra: Any) -> dict[str, Any]:
        """librdkafka settings of `user` on the client listener (SCRAM-SHA-512)."""
        return {"bootstrap.servers": self.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": kafka_acl.MECHANISM, "sasl.username": user,
                "sasl.password": password, **extra}


@dataclass(frozen=True)
class Principals:
    """One system's principals on a SecureKafka."""

    kafka: SecureKafka
    prefix: str
    run_dir: Path

    def user(self, principal: str) -> str:
        return f"{self.prefix}{principal}"

    def password(self, principal: str) -> str:
        return kafka_acl.passwords(self.run_dir, create=False)[principal]

    def service_env(self, service: str) -> dict[str, str]:
        """The KAFKA_* settings `service` runs with (nothing for a process without Kafka)."""
        env = kafka_acl.service_env(self.run_dir, service)
        if env:
            env["KAFKA_SASL_USERNAME"] = self.user(env["KAFKA_SASL_USERNAME"])
        return env

    def tool_config(self, principal: str) -> Path:
        """The infra/kafka/bin tools' config as `principal` (for KAFKA_CLIENT_CONFIG)."""
        return kafka_acl.client_config_path(self.run_dir, principal)


def principals(kafka: SecureKafka, prefix: str, run_dir: Path,
               env: Mapping[str, str]) -> Principals:
    """Credentials and ACLs for a system whose topics and groups `env` names."""
    secrets = kafka_acl.passwords(run_dir)
    kafka_acl.configure(AdminClient(kafka.admin), secrets, env, user_prefix=prefix)
    made = Principals(kafka, prefix, run_dir)
    for principal in (kafka_acl.CATALOG,):
        kafka_acl.write_private(made.tool_config(principal), kafka_acl.client_properties(
            kafka.bootstrap, made.user(principal), secrets[principal]))
    return made
