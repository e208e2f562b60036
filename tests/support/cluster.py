"""A private 3-broker Kafka cluster for tests, started by `infra/stack.sh kafka` itself.

The same code as `make up BROKERS=3` (infra/cluster.sh) runs it, on free ports and under the
test's own RUN_DIR, so a test may kill -9 brokers without touching anyone's stack:

    cluster = LocalCluster(tmp_path / "kafka")
    cluster.start()                  # all three up and registered
    cluster.kill(2)                  # SIGKILL node 2's process group
    cluster.start()                  # starts the nodes that are not running, same data
    cluster.stop()                   # infra/stack.sh down
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from tests.support.ports import bindable, free_port_block

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "infra" / "stack.sh"
SIZE = 3


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (stack.sh's children are reaped by
    whoever adopted them, which may take a while)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class LocalCluster:
    """Three KRaft nodes (broker + controller each) under `root`, run by infra/stack.sh."""

    def __init__(self, root: Path, heap: str = "-Xms128m -Xmx512m") -> None:
        self.root = Path(root)
        self.port = free_port_block(2 * SIZE)
        env = {k: v for k, v in os.environ.items()
               if k not in ("KAFKA_BOOTSTRAP", "KAFKA_REPLICATION_FACTOR",
                            "KAFKA_MIN_INSYNC_REPLICAS")}
        self.env = {
            **env,
            "RUN_DIR": str(self.root),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.port + 1),
            "KAFKA_BROKERS": str(SIZE),
            "KAFKA_HEAP": heap,
            "START_TIMEOUT": "180",
            # stack.sh runs `cartstream` beside this interpreter; this checkout's code first.
            "PYTHON": sys.executable,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        }

    def node_port(self, node: int) -> int:
        """Node `node`'s (1..3) client port, as infra/cluster.sh derives it."""
        return self.port + 2 * (node - 1)

    @property
    def bootstrap(self) -> str:
        """Every node, as `make up BROKERS=3` gives the services."""
        return ",".join(f"localhost:{self.node_port(i)}" for i in range(1, SIZE + 1))

    def _stack(self, *args: str, timeout_s: float = 300) -> None:
        out = subprocess.run(["bash", str(STACK), *args], env=self.env, cwd=ROOT,
                             capture_output=True, text=True, timeout=timeout_s)
        if out.returncode != 0:
            raise RuntimeError(f"infra/stack.sh {' '.join(args)} failed ({out.returncode}):\n"
                               f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}\n{self.tail()}")

    def start(self) -> None:
        """Start the nodes that are not running and wait until all three are registered."""
        self._stack("kafka")

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after 30 s)."""
        self._stack("down")

    def pid(self, node: int) -> int:
        """Node `node`'s process (group) id, from its pid file."""
        return int((self.root / "pids" / f"kafka-{node}.pid").read_text())

    def kill(self, node: int, timeout_s: float = 30) -> None:
        """kill -9 node `node` and wait until it is gone and its port is free."""
        pid = self.pid(node)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid) and bindable(self.node_port(node)):
                return
            time.sleep(0.05)
        raise TimeoutError(f"kafka-{node} (pid {pid}) did not die within {timeout_s}s")

    def admin(self) -> AdminClient:
        """An admin client over every node."""
        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

    def partitions(self, admin: AdminClient, topic: str) -> dict[int, tuple[int, list[int]]]:
        """partition -> (leader node, in-sync nodes) of `topic`, as the metadata says now."""
        meta = admin.list_topics(topic, timeout=5).topics[topic]
        return {p: (m.leader, list(m.isrs)) for p, m in meta.partitions.items()}

    def tail(self, lines: int = 20) -> str:
        """The end of every node's log, for failure messages."""
        out = []
        for i in range(1, SIZE + 1):
            log = self.root / "logs" / f"kafka-{i}.log"
            if log.exists():
                text = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- kafka-{i}\n" + "\n".join(text))
        return "\n".join(out)


class LeaderWatch:
    """Polls a topic's leaders and in-sync replicas in a thread; keeps every change it saw as
    (last time seen as before, first time seen changed, what changed)."""

    def __init__(self, cluster: LocalCluster, topic: str, every_s: float = 0.2) -> None:
        self.cluster, self.topic, self.every_s = cluster, topic, every_s
        self.changes: list[tuple[float, float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-watch", daemon=True)

    def _run(self) -> None:
        admin = self.cluster.admin()
        before: dict[int, tuple[int, list[int]]] | None = None
        seen_at = time.monotonic()
        while not self._stop.is_set():
            try:
                now_state = self.cluster.partitions(admin, self.topic)
            except Exception:  # noqa: BLE001 - metadata from a cluster in flux: ask again
                now_state = None
            now = time.monotonic()
            if now_state is not None:
                if before is not None and now_state != before:
                    diff = {p: (before.get(p), s) for p, s in now_state.items()
                            if before.get(p) != s}
                    self.changes.append((seen_at, now, repr(diff)))
                before, seen_at = now_state, now
            self._stop.wait(self.every_s)

    def __enter__(self) -> LeaderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
