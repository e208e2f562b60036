"""compose.yaml: the default stack keeps one broker; the `cluster` profile, with
infra/compose-cluster.env, is the 3-node layout of `make up BROKERS=3` (no Docker needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a compose env file."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def compose(variables: dict[str, str]) -> dict[str, Any]:
    """compose.yaml parsed after interpolating ${VAR:-default} as Compose does."""
    text = (ROOT / "compose.yaml").read_text()
    return yaml.safe_load(_VAR.sub(lambda m: variables.get(m[1], m[2] or ""), text))


def active(doc: dict[str, Any], profiles: set[str]) -> dict[str, Any]:
    """The services a `docker compose --profile …` would start."""
    return {name: svc for name, svc in doc["services"].items()
            if not svc.get("profiles") or profiles & set(svc["profiles"])}


def brokers(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc["environment"] for name, svc in services.items()
            if svc.get("image", "").startswith("apache/kafka")}


def test_default_stack_has_one_broker_and_replication_factor_1() -> None:
    services = active(compose({}), set())
    (env,) = brokers(services).values()
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "1"
    assert services["write-api"]["environment"]["KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert str(services["topics"]["environment"]["KAFKA_REPLICATION_FACTOR"]) == "1"


def test_cluster_profile_is_three_kraft_nodes_with_replication_factor_3() -> None:
    variables = env_file(ROOT / "infra" / "compose-cluster.env")
    assert variables["COMPOSE_PROFILES"] == "cluster"
    services = active(compose(variables), {"cluster"})
    nodes = brokers(services)
    assert len(nodes) == 3
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in nodes.values()}
    assert len(voters) == 1, voters  # one quorum, the same on every node
    (voters_line,) = voters
    by_id = {str(env["KAFKA_NODE_ID"]): name for name, env in nodes.items()}
    assert voters_line == ",".join(f"{i}@{by_id[str(i)]}:9093" for i in (1, 2, 3))
    for env in nodes.values():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert (str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]),
                str(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]),
                str(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]),
                str(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]),
                str(env["KAFKA_MIN_INSYNC_REPLICAS"])) == ("3", "3", "2", "3", "2")
    # Every node is published on its own host port; the services bootstrap from all three.
    ports = [p for svc in nodes for p in services[svc]["ports"]]
    assert len(set(ports)) == 3
    for name in ("topics", "write-api", "aggregator", "sink-redis", "read-api"):
        env = services[name]["environment"]
        assert sorted(env["KAFKA_BOOTSTRAP"].split(",")) == sorted(f"{n}:9092" for n in nodes)
    assert str(services["topics"]["environment"]["KAFKA_REPLICATION_FACTOR"]) == "3"
