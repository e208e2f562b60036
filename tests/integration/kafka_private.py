"""A private, single-node Kafka broker for tests that stop and restart Kafka.

The shared broker on 9092 serves everyone, so a test that kills Kafka starts its own: the same
jars and config template as `infra/stack.sh` (start_kafka), its own free ports and data dir.

    with PrivateKafka(tmp_path / "kafka") as kafka:   # formatted and started
        admin = wait_for_broker(kafka.bootstrap, 60)
        kafka.stop(hard=True)                          # SIGKILL
        kafka.start()                                  # same data dir, same ports
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
KAFKA_HOME = ROOT / "infra" / "kafka"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def render_properties(template: str, port: int, controller_port: int, log_dir: Path,
                      admin_port: int = 0, admin_password: str = "") -> str:
    """server.properties from infra/kafka/server.properties.in, as stack.sh's sed does."""
    return (
        template.replace("@KAFKA_PORT@", str(port))
        .replace("@KAFKA_CONTROLLER_PORT@", str(controller_port))
        .replace("@KAFKA_ADMIN_PORT@", str(admin_port))
        .replace("@KAFKA_LOG_DIR@", str(log_dir))
        .replace("@KAFKA_ADMIN_USER@", "admin")
        .replace("@KAFKA_ADMIN_PASSWORD@", admin_password)
    )


class PrivateKafka:
    """One KRaft broker+controller process on loopback, owned by a test."""

    def __init__(self, root: Path, port: int | None = None,
                 controller_port: int | None = None, heap: str = "-Xmx512m",
                 secure: bool = False) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        # secure: the secure profile's listeners and authorizer (server-secure.properties.in);
        # the admin principal (SASL/PLAIN) on admin_port, nobody else until ACLs say so.
        self.secure = secure
        self.admin_port = free_port() if secure else 0
        while secure and self.admin_port in (self.port, self.controller_port):
            self.admin_port = free_port()
        self.admin_password = uuid.uuid4().hex if secure else ""
        self.heap = heap
        self.data_dir = self.root / "data"
        self.props = self.root / "server.properties"
        self.log_path = self.root / "kafka.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers for clients."""
        return f"localhost:{self.port}"

    def admin_config(self) -> dict[str, str]:
        """secure: librdkafka settings of the admin principal on the loopback admin listener."""
        from infra.kafka_acl import admin_config

        return admin_config(f"127.0.0.1:{self.admin_port}", self.admin_password)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_HEAP_OPTS": self.heap,
            "KAFKA_LOG4J_CONFIG": str(KAFKA_HOME / "log4j2-server.properties"),
        }

    def format(self) -> None:
        """Write server.properties and format the storage once (KRaft needs a cluster id)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        template = (KAFKA_HOME / "server.properties.in").read_text()
        if self.secure:
            template += (KAFKA_HOME / "server-secure.properties.in").read_text()
        self.props.write_text(
            render_properties(template, self.port, self.controller_port, self.data_dir,
                              self.admin_port, self.admin_password)
        )
        self.props.chmod(0o600)  # secure: it holds the admin password
        if (self.data_dir / "meta.properties").exists():
            return
        storage = str(KAFKA_HOME / "bin" / "kafka-storage")
        cluster_id = subprocess.run(
            [storage, "random-uuid"], check=True, capture_output=True, text=True,
            env=self._env(), timeout=120,
        ).stdout.strip()
        subprocess.run(
            [storage, "format", "-t", cluster_id, "-c", str(self.props)],
            check=True, capture_output=True, env=self._env(), timeout=120,
        )

    def start(self, timeout_s: float = 90) -> None:
        """Start the broker (formatting first if needed) and wait until its port accepts."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.format()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(KAFKA_HOME / "bin" / "kafka-run-class"), "kafka.Kafka", str(self.props)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env(),
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"private Kafka exited early; see {self.log_path}:\n"
                                   + self.tail())
            if time.monotonic() > deadline:
                raise TimeoutError(f"private Kafka not listening after {timeout_s}s:\n"
                                   + self.tail())
            time.sleep(0.2)

    def stop(self, hard: bool = False, timeout_s: float = 30) -> None:
        """SIGKILL (hard) or SIGTERM, then SIGKILL if it ignores SIGTERM; waits for exit."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
        # The port must be free before a restart can bind it again.
        deadline = time.monotonic() + timeout_s
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        """The end of the broker's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> PrivateKafka:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(hard=True)
