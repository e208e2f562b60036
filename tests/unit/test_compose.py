"""compose.yaml runs what `make up PROFILE=secure` runs: the same services, topics, principals,
users, roles and secrets; by default on one broker, and in its `cluster` profile (with
infra/compose-cluster.env) on the 3-node layout of `make up BROKERS=3`, just as secure. No Docker
engine here, so the file is parsed, interpolated as Compose does, and checked against the tables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cart_contract import topics
from infra import compose_exec, kafka_acl, pg_roles, redis_acl

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "compose.yaml").read_text()
STACK_SERVICES = re.findall(r'^  "([a-z-]+)\|', (ROOT / "infra" / "stack.sh").read_text(), re.M)
# ${NAME} and ${NAME:-default}, the only forms compose.yaml uses (anything else stays and fails).
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
    text = _VAR.sub(lambda m: variables.get(m[1], m[2] or ""), TEXT)
    assert "${" not in text and "$$" not in text
    return yaml.safe_load(text)


def active(doc: dict[str, Any], profiles: set[str]) -> dict[str, Any]:
    """The services a `docker compose --profile …` would start."""
    return {name: svc for name, svc in doc["services"].items()
            if not svc.get("profiles") or profiles & set(svc["profiles"])}


def str_env(svc: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in svc.get("environment", {}).items()}


def brokers(services: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {name: str_env(svc) for name, svc in services.items()
            if svc.get("image", "").startswith("apache/kafka")}


def listeners(value: str) -> dict[str, str]:
    """`NAME://host:port,…` -> {NAME: host:port}."""
    return dict(item.split("://") for item in value.split(","))


CLUSTER_VARIABLES = env_file(ROOT / "infra" / "compose-cluster.env")
DEFAULT = active(compose({}), set())
CLUSTER = active(compose(CLUSTER_VARIABLES), {"cluster"})


def _env(name: str) -> dict[str, str]:
    return str_env(DEFAULT[name])


def test_it_runs_every_service_of_the_stack_in_the_secure_profile() -> None:
    assert set(STACK_SERVICES) <= set(DEFAULT)
    for name in STACK_SERVICES:
        assert _env(name)["CARTSTREAM_PROFILE"] == "secure", name


def test_the_topics_are_the_contract_s() -> None:
    env = _env("topics")
    assert {env[k] for k in env if k.startswith("TOPIC_")} == {
        topics.CART_EVENTS, topics.PRODUCT_DETAILS, topics.CART_DETAILS, topics.DEAD_LETTER,
        topics.CART_RESERVATIONS, topics.PRODUCT_RESERVATIONS}


def test_every_secret_is_a_docker_secret_of_the_generated_file() -> None:
    declared = compose({})["secrets"]
    names = {"jwt-hs256",
             *(kafka_acl.secret_name(p) for p in kafka_acl.PRINCIPALS),
             *(redis_acl.secret_name(u) for u in (redis_acl.DEFAULT_USER, *redis_acl.USERS)),
             *(pg_roles.secret_name(k) for k in pg_roles.KINDS)}
    assert set(declared) == names
    assert all(declared[n] == {"file": f".run/secrets/{n}"} for n in names)
    # No password in the file itself (nor in the cluster's env file): only *_FILE and secrets.
    for text in (TEXT, (ROOT / "infra" / "compose-cluster.env").read_text()):
        assert not re.search(r"(?i)(PASSWORD|SECRET)[:=]\s*[^/\s]", text.replace("_FILE:", "_FILE"))


def test_each_service_is_its_own_kafka_principal_with_only_its_secrets() -> None:
    for name in STACK_SERVICES:
        env, mounted = _env(name), set(DEFAULT[name].get("secrets", []))
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
            assert DEFAULT[name]["command"][:4] == ["python", "-m", "infra.compose_exec", name]
        if name in ("write-api", "read-api"):
            expected.add("jwt-hs256")
        assert mounted == expected, name
    for job, principal in (("topics", "admin"), ("catalog", kafka_acl.CATALOG)):
        assert _env(job)["KAFKA_SASL_USERNAME"] == principal
        assert DEFAULT[job]["secrets"] == [kafka_acl.secret_name(principal)]


def _assert_secure_node(name: str, svc: dict[str, Any]) -> None:
    """A node of the secure profile: SASL on every listener, ACLs, admin the only super user,
    the JAAS wrapper reading the admin secret, ADMIN (inter-broker) advertised as itself."""
    env = str_env(svc)
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer"), name
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false", name
    assert env["KAFKA_SUPER_USERS"] == "User:admin", name
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, name
    assert set(listeners(env["KAFKA_LISTENERS"])) == set(protocols), name
    assert env["KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512", name
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "ADMIN", name
    assert listeners(env["KAFKA_ADVERTISED_LISTENERS"])["ADMIN"] == f"{name}:9094", name
    assert listeners(env["KAFKA_ADVERTISED_LISTENERS"])["CLIENT"] == f"{name}:9092", name
    assert svc["entrypoint"] == ["/bin/bash", "/cartstream/kafka.sh"], name
    assert "./infra/compose/kafka.sh:/cartstream/kafka.sh:ro" in svc["volumes"], name
    assert svc["secrets"] == [kafka_acl.secret_name(kafka_acl.ADMIN)], name


def test_the_broker_is_the_secure_profile_s() -> None:
    (name,) = brokers(DEFAULT)
    _assert_secure_node(name, DEFAULT[name])
    # Alone, its controller is on the container's loopback, and so is its one voter.
    env = _env(name)
    controller = listeners(env["KAFKA_LISTENERS"])["CONTROLLER"]
    assert controller.startswith("127.0.0.1:")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"1@{controller}"
    assert DEFAULT["kafka-acl"]["command"][:4] == ["python", "-m", "infra.kafka_acl", "configure"]
    assert set(DEFAULT["kafka-acl"]["secrets"]) == {
        kafka_acl.secret_name(p) for p in kafka_acl.PRINCIPALS}
    assert DEFAULT["redis"]["command"][-2:] == ["--aclfile", "/acl/users.acl"]
    assert _env("postgres")["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg-superuser"


def test_default_stack_has_one_broker_and_replication_factor_1() -> None:
    (env,) = brokers(DEFAULT).values()
    assert (env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], env["KAFKA_DEFAULT_REPLICATION_FACTOR"],
            env["KAFKA_MIN_INSYNC_REPLICAS"]) == ("1", "1", "1")
    for name, svc in DEFAULT.items():
        if "KAFKA_BOOTSTRAP" in svc.get("environment", {}):
            assert _env(name)["KAFKA_BOOTSTRAP"] == "kafka:9092", name
    assert _env("kafka-acl")["KAFKA_ADMIN_BOOTSTRAP"] == "kafka:9094"
    assert _env("topics")["KAFKA_REPLICATION_FACTOR"] == "1"


def test_cluster_profile_is_three_secure_kraft_nodes_with_replication_factor_3() -> None:
    assert CLUSTER_VARIABLES["COMPOSE_PROFILES"] == "cluster"
    nodes = brokers(CLUSTER)
    assert len(nodes) == 3
    for name in nodes:
        _assert_secure_node(name, CLUSTER[name])
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in nodes.values()}
    assert len(voters) == 1, voters  # one quorum, the same on every node
    (voters_line,) = voters
    by_id = {env["KAFKA_NODE_ID"]: name for name, env in nodes.items()}
    assert voters_line == ",".join(f"{i}@{by_id[str(i)]}:9093" for i in (1, 2, 3))
    for name, env in nodes.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        # The other voters reach its controller over the network, not on its loopback.
        host, port = listeners(env["KAFKA_LISTENERS"])["CONTROLLER"].rsplit(":", 1)
        assert host in ("", "0.0.0.0", name) and port == "9093", name
        assert (env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"],
                env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"],
                env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"],
                env["KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR"],
                env["KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR"],
                env["KAFKA_DEFAULT_REPLICATION_FACTOR"],
                env["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "3", "2", "3", "2", "3", "2"), name
    # Every node is published on its own host port, the one its HOST listener advertises.
    published = {}
    for name, env in nodes.items():
        ((host_port, container_port),) = (p.split(":") for p in CLUSTER[name]["ports"])
        advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
        assert listeners(env["KAFKA_LISTENERS"])["HOST"] == f":{container_port}", name
        assert advertised["HOST"] == f"localhost:{host_port}", name
        published[name] = host_port
    assert sorted(published.values()) == ["29092", "29094", "29096"]
    # Every client bootstraps from all three; kafka-acl on their ADMIN listeners.
    clients = [n for n, svc in CLUSTER.items() if "KAFKA_BOOTSTRAP" in svc.get("environment", {})]
    assert {"topics", "catalog", "kafka-acl", "write-api", "aggregator", "sink-redis",
            "sink-postgres", "sink-catalog", "sink-reservations"} <= set(clients)
    for name in clients:
        bootstrap = str_env(CLUSTER[name])["KAFKA_BOOTSTRAP"]
        assert sorted(bootstrap.split(",")) == sorted(f"{n}:9092" for n in nodes), name
    admin_bootstrap = str_env(CLUSTER["kafka-acl"])["KAFKA_ADMIN_BOOTSTRAP"]
    assert sorted(admin_bootstrap.split(",")) == sorted(f"{n}:9094" for n in nodes)
    # topics waits for as many brokers as its replication factor (cartstream topics --wait).
    assert str_env(CLUSTER["topics"])["KAFKA_REPLICATION_FACTOR"] == "3"


def test_kafka_acl_and_topics_wait_for_every_node() -> None:
    for services in (DEFAULT, CLUSTER):
        nodes = brokers(services)
        acl_deps = services["kafka-acl"]["depends_on"]
        assert {n for n, d in acl_deps.items() if d["condition"] == "service_healthy"
                and n in nodes} == set(nodes)
        assert services["topics"]["depends_on"]["kafka-acl"] == {
            "condition": "service_completed_successfully"}
        assert services["topics"]["command"][:4] == ["cartstream", "topics", "--wait", "120"]


def test_no_service_requires_one_its_profiles_leave_out() -> None:
    """Compose refuses the whole project when a started service requires a disabled one: the
    default stack must stay valid while kafka-acl also waits for the cluster's nodes."""
    doc = compose({})
    for profiles in (set(), {"cluster"}):
        services = active(doc, profiles)
        for name, svc in services.items():
            deps = svc.get("depends_on", {})
            assert isinstance(deps, dict), name
            for dep, cond in deps.items():
                assert dep in doc["services"], (name, dep)
                if dep not in services:
                    assert cond.get("required") is False, (profiles, name, dep)
                    assert doc["services"][dep]["profiles"] == ["cluster"], dep


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
