"""Kafka principals and ACLs of the secure profile: each process only the topics and groups it uses.

The broker (infra/kafka/server-secure.properties.in) authenticates clients with SASL/SCRAM-SHA-512
and authorizes every request with the StandardAuthorizer: no ACL, no access
(`allow.everyone.if.no.acl.found=false`), and only `admin` is a super user. `GRANTS` below is
the one definition of who may do what; topic names come from the TOPIC_* settings and the sinks'
groups from CONSUMER_GROUP_PREFIX, so the ACLs follow the names instead of retyping them.
READ on a topic or group implies DESCRIBE; WRITE on a topic implies DESCRIBE and, since Kafka 3.0
(KIP-679), the idempotent producer's IDEMPOTENT_WRITE. No process uses transactions.

Passwords live in `$RUN_DIR/secrets/kafka-<principal>` (0600, `cartstream secrets`). `configure`
connects as `admin` to the broker's loopback ADMIN listener (SASL/PLAIN against the broker's own
file: SCRAM credentials are metadata and cannot be checked before they exist), upserts every
principal's SCRAM credential (admin's too, for the tools on the client listener), creates the
ACLs and deletes any other ACL of these principals. It is idempotent; rotating a password is
replacing its file and running it again (`make up PROFILE=secure` does), then restarting the
process that uses it.

    python -m infra.kafka_acl configure [--wait S]   # credentials + ACLs, and the tools' configs
    python -m infra.kafka_acl env SERVICE            # the KAFKA_* settings SERVICE runs with
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cart_contract.secrets import ensure_secret_file, read_secret_file, secrets_dir
from cart_contract.topics import AGGREGATOR_LAG_GROUP, AGGREGATOR_SOURCE_GROUP

ADMIN = "admin"  # the super user: topics, replay, the operators' tools, this module
CATALOG = "catalog"  # the catalog loader and the seed's kafka-console-producer
MECHANISM = "SCRAM-SHA-512"
ITERATIONS = 8192
READ, WRITE = "READ", "WRITE"

# principal -> (operation, resource, name): `topic_*` are the TopicSettings fields (TOPIC_*),
# `sink:<name>` that sink's consumer group (CONSUMER_GROUP_PREFIX-<name>), other groups literal.
GRANTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    # Appends commands' events (idempotent producer).
    "write-api": ((WRITE, "topic", "topic_cart_events"),),
    # Reads the events, the catalog and its own request log; writes carts, the request log,
    # reserved counts and dead letters. Its sources assign partitions (offsets in snapshots).
    "aggregator": (
        (READ, "topic", "topic_cart_events"),
        (READ, "topic", "topic_products"),
        (READ, "topic", "topic_cart_reservations"),
        (WRITE, "topic", "topic_cart_reservations"),
        (WRITE, "topic", "topic_product_reservations"),
        (WRITE, "topic", "topic_cart_details"),
        (WRITE, "topic", "topic_dead_letter"),
        (READ, "group", AGGREGATOR_SOURCE_GROUP),
        (READ, "group", AGGREGATOR_LAG_GROUP),
    ),
    # Each sink: its topic within its group, and its poison records to the dead letters.
    "sink-redis": ((READ, "topic", "topic_cart_details"), (READ, "group", "sink:redis"),
                   (WRITE, "topic", "topic_dead_letter")),
    "sink-postgres": ((READ, "topic", "topic_cart_details"), (READ, "group", "sink:postgres"),
                      (WRITE, "topic", "topic_dead_letter")),
    "sink-catalog": ((READ, "topic", "topic_products"), (READ, "group", "sink:catalog"),
                     (WRITE, "topic", "topic_dead_letter")),
    "sink-reservations": ((READ, "topic", "topic_product_reservations"),
                          (READ, "group", "sink:reservations"),
                          (WRITE, "topic", "topic_dead_letter")),
    # Products only.
    CATALOG: ((WRITE, "topic", "topic_products"),),
}
PRINCIPALS = (ADMIN, *GRANTS)
# Which principal each process runs as (None: the process uses no Kafka).
SERVICE_PRINCIPALS: dict[str, str | None] = {
    **{p: p for p in GRANTS}, "topics": ADMIN, "replay": ADMIN, ADMIN: ADMIN, "read-api": None}


def secret_name(principal: str) -> str:
    """The secrets file of a principal's password."""
    return f"kafka-{principal}"


def passwords(run_dir: Path, create: bool = True) -> dict[str, str]:
    """Every principal's password, generated into $RUN_DIR/secrets if missing."""
    read = ensure_secret_file if create else read_secret_file
    return {p: read(secrets_dir(run_dir) / secret_name(p)) for p in PRINCIPALS}


def resolve(env: Mapping[str, str] | None = None) -> dict[str, list[tuple[str, str, str]]]:
    """GRANTS with the names of this deployment: principal -> (operation, resource, name)."""
    from connectors.config import Config
    from infra.topics import TopicSettings

    topics = TopicSettings.from_env(env)
    sinks = Config.from_env(env)
    out: dict[str, list[tuple[str, str, str]]] = {}
    for principal, grants in GRANTS.items():
        rows = []
        for op, kind, name in grants:
            if kind == "topic":
                name = getattr(topics, name)
            elif name.startswith("sink:"):
                name = sinks.group(name.removeprefix("sink:"))
            rows.append((op, kind, name))
        out[principal] = rows
    return out


def bindings(env: Mapping[str, str] | None = None, user_prefix: str = "") -> list[Any]:
    """The ACL bindings (confluent_kafka AclBinding) of every principal, literal names only."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
    return [AclBinding(kinds[kind], name, ResourcePatternType.LITERAL,
                       f"User:{user_prefix}{principal}", "*", AclOperation[op],
                       AclPermissionType.ALLOW)
            for principal, rows in resolve(env).items() for op, kind, name in rows]


def _key(b: Any) -> tuple[Any, ...]:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
            b.permission_type)


def admin_config(bootstrap: str, password: str) -> dict[str, Any]:
    """librdkafka settings of `admin` on the broker's ADMIN listener (SASL/PLAIN, loopback)."""
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": ADMIN, "sasl.password": password,
            "log_level": 0}


def configure(admin: Any, secrets: Mapping[str, str], env: Mapping[str, str] | None = None,
              user_prefix: str = "") -> list[str]:
    """Upsert every principal's SCRAM credential and converge the ACLs; return what was done."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS)
    upserts = [UserScramCredentialUpsertion(f"{user_prefix}{p}", info, secrets[p].encode())
               for p in PRINCIPALS]
    for fut in admin.alter_user_scram_credentials(upserts).values():
        fut.result()
    done = [f"SCRAM-SHA-512 credentials of {len(upserts)} principals"]
    wanted = bindings(env, user_prefix)
    for fut in admin.create_acls(wanted).values():
        fut.result()  # an ACL that exists already is no error
    keys = {_key(b) for b in wanted}
    stale = []
    for principal in GRANTS:
        found = admin.describe_acls(AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user_prefix}{principal}",
            None, AclOperation.ANY, AclPermissionType.ANY)).result()
        stale += [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal,
                                   b.host, b.operation, b.permission_type)
                  for b in found if _key(b) not in keys]
    if stale:
        for fut in admin.delete_acls(stale).values():
            fut.result()
    done.append(f"{len(wanted)} ACLs" + (f", {len(stale)} stale removed" if stale else ""))
    return done


def client_properties(bootstrap: str, user: str, password: str) -> str:
    """A Java client's properties (the infra/kafka/bin tools) for `user` on the client listener."""
    return ("security.protocol=SASL_PLAINTEXT\n"
            f"sasl.mechanism={MECHANISM}\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{user}" password="{password}";\n'
            f"bootstrap.servers={bootstrap}\n")


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def client_config_path(run_dir: Path, principal: str) -> Path:
    """Where `configure` writes a principal's tool config (infra/kafka/bin reads it)."""
    return run_dir / "kafka" / f"client-{principal}.properties"


def service_env(run_dir: Path, service: str) -> dict[str, str]:
    """The KAFKA_* settings a process runs with: its principal, its password file."""
    principal = SERVICE_PRINCIPALS[service]
    if principal is None:
        return {}
    return {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": principal,
            "KAFKA_SASL_PASSWORD_FILE": str(secrets_dir(run_dir) / secret_name(principal))}


def _connect(bootstrap: str, password: str, wait_s: float) -> Any:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(admin_config(bootstrap, password))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            admin.list_topics(timeout=2)
            return admin
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    """Command line for infra/stack.sh and compose.yaml (reads RUN_DIR, KAFKA_ADMIN_PORT or
    KAFKA_ADMIN_BOOTSTRAP, KAFKA_BOOTSTRAP)."""
    parser = argparse.ArgumentParser(prog="python -m infra.kafka_acl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("configure").add_argument("--wait", type=float, default=60.0)
    sub.add_parser("env").add_argument("service", choices=sorted(SERVICE_PRINCIPALS))
    args = parser.parse_args(argv)
    run_dir = Path(os.environ.get("RUN_DIR", ".run"))
    if args.cmd == "env":
        for k, v in service_env(run_dir, args.service).items():
            sys.stdout.write(f"{k}={v}\n")
        return 0
    logging.basicConfig(level=logging.WARNING)
    secrets = passwords(run_dir)
    # compose.yaml names the broker's admin listener; the local stack its loopback port.
    admin_bootstrap = os.environ.get(
        "KAFKA_ADMIN_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_ADMIN_PORT', '9095')}")
    admin = _connect(admin_bootstrap, secrets[ADMIN], args.wait)
    for line in configure(admin, secrets):
        sys.stdout.write(line + "\n")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092")
    for principal in (ADMIN, CATALOG):
        write_private(client_config_path(run_dir, principal),
                      client_properties(bootstrap, principal, secrets[principal]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
