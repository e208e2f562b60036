"""infra/cluster.sh's bookkeeping, through infra/stack.sh, with no broker started: the recorded
count, what `status` lists, and the refusals that come before anything is installed or run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stack(run_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("KAFKA_BOOTSTRAP", "KAFKA_BROKERS", "KAFKA_REPLICATION_FACTOR")}
    return subprocess.run(["bash", str(ROOT / "infra" / "stack.sh"), *args], cwd=ROOT,
                          env={**clean, "RUN_DIR": str(run_dir), "KAFKA_PORT": "19092",
                               "KAFKA_CONTROLLER_PORT": "19093",
                               # no `cartstream` beside it: `status` asks no broker for lag
                               "PYTHON": str(run_dir / "no-python"), **env},
                          capture_output=True, text=True, timeout=60)


def pretend_running(run_dir: Path, *names: str) -> None:
    """pid files naming a live process (this one), as `spawn` writes them."""
    (run_dir / "pids").mkdir(parents=True, exist_ok=True)
    for name in names:
        (run_dir / "pids" / f"{name}.pid").write_text(str(os.getpid()))


def test_status_lists_the_three_brokers_with_their_pids_and_the_bootstrap(tmp_path: Path) -> None:
    (tmp_path / "brokers").write_text("3\n")
    pretend_running(tmp_path, "kafka-1", "kafka-2", "kafka-3")
    out = stack(tmp_path, "status")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line}
    for i, port in ((1, 19092), (2, 19094), (3, 19096)):
        assert rows[f"kafka-{i}"][1:] == ["up", str(os.getpid()), f"localhost:{port}"]
    assert "kafka" not in rows
    assert ("Kafka: 3 broker(s), bootstrap localhost:19092,localhost:19094,localhost:19096"
            in out.stdout)


def test_one_broker_is_listed_as_kafka(tmp_path: Path) -> None:
    pretend_running(tmp_path, "kafka")
    out = stack(tmp_path, "status")
    assert out.returncode == 0, out.stderr
    assert [line.split()[:2] for line in out.stdout.splitlines()
            if line.startswith("kafka")] == [["kafka", "up"]]


def test_a_different_count_while_kafka_runs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "brokers").write_text("3\n")
    pretend_running(tmp_path, "kafka-2")
    out = stack(tmp_path, "kafka", KAFKA_BROKERS="1")
    assert out.returncode != 0
    assert "Kafka runs with 3 broker(s); run 'make down' before 'make up BROKERS=1'" in out.stderr
    assert (tmp_path / "brokers").read_text().strip() == "3"


def test_only_1_or_3_brokers(tmp_path: Path) -> None:
    out = stack(tmp_path, "kafka", KAFKA_BROKERS="2")
    assert out.returncode != 0 and "BROKERS must be 1 or 3, got '2'" in out.stderr


def test_colliding_node_ports_are_refused(tmp_path: Path) -> None:
    out = stack(tmp_path, "kafka", KAFKA_BROKERS="3", KAFKA_CONTROLLER_PORT="19094")
    assert out.returncode != 0 and "cluster ports collide" in out.stderr


def choose(run_dir: Path, asked: str = "") -> subprocess.CompletedProcess[str]:
    """infra/cluster.sh's choose_brokers alone (stack.sh's helpers stubbed), then the env."""
    script = f"""
        set -euo pipefail
        RUN_DIR={run_dir}; PIDS=$RUN_DIR/pids; LOGS=$RUN_DIR/logs; KAFKA_PORT=19092
        KAFKA_CONTROLLER_PORT=19093; KAFKA_BOOTSTRAP=localhost:19092
        say() {{ echo "$*"; }}; die() {{ echo "$*" >&2; exit 1; }}
        is_running() {{ [[ -f "$PIDS/$1.pid" ]] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }}
        source {ROOT / "infra" / "cluster.sh"}
        KAFKA_BROKERS={asked} choose_brokers
        echo "brokers=$KAFKA_BROKERS bootstrap=$KAFKA_BOOTSTRAP rf=${{KAFKA_REPLICATION_FACTOR:-}}"
    """
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)


def test_down_then_up_without_brokers_is_one_broker_again(tmp_path: Path) -> None:
    (tmp_path / "brokers").write_text("3\n")  # a cluster ran, nothing runs now
    out = choose(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "brokers=1 bootstrap=localhost:19092 rf="
    assert (tmp_path / "brokers").read_text().strip() == "1"


def test_up_without_brokers_keeps_a_running_cluster(tmp_path: Path) -> None:
    (tmp_path / "brokers").write_text("3\n")
    pretend_running(tmp_path, "kafka-1")
    out = choose(tmp_path)
    assert out.stdout.splitlines()[-1] == (
        "brokers=3 bootstrap=localhost:19092,localhost:19094,localhost:19096 rf=3")


def test_switching_logs_moves_the_aggregator_recovery_aside(tmp_path: Path) -> None:
    recovery = tmp_path / "aggregator" / "recovery"
    recovery.mkdir(parents=True)
    (recovery / "part-0.sqlite3").write_text("offsets of the one-broker log")
    out = choose(tmp_path, "3")
    assert out.returncode == 0, out.stderr
    assert not recovery.exists()
    (aside,) = (tmp_path / "aggregator").glob("recovery.brokers-1.*")
    assert (aside / "part-0.sqlite3").exists()
    # The same count again: nothing moves.
    recovery.mkdir()
    assert choose(tmp_path, "3").returncode == 0 and recovery.exists()


def test_switching_under_a_running_aggregator_is_refused(tmp_path: Path) -> None:
    (tmp_path / "aggregator" / "recovery").mkdir(parents=True)
    pretend_running(tmp_path, "aggregator")
    out = choose(tmp_path, "3")
    assert out.returncode != 0 and "run 'make down' before 'make up BROKERS=3'" in out.stderr
    assert (tmp_path / "aggregator" / "recovery").exists()
