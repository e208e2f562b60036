"""Helpers for the connectors' tests and benchmark: records, topics, private servers.

Nothing here runs in production, so it lives with the tests; the bench imports it from here
(bench scripts put the repository root on sys.path).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType

from cart_contract import CHECKED_OUT, OPEN, CartDetails, EventPosition, LineItem
from connectors.config import Config
from tests.support.ports import free_port


@dataclass(frozen=True)
class FakeMessage:
    """Stands in for a confluent_kafka.Message in tests without a broker."""

    _value: bytes | None
    _key: bytes | None = None
    _offset: int = 0
    _partition: int = 0
    _topic: str = "test"

    def value(self) -> bytes | None:
        """The record's value."""
        return self._value

    def key(self) -> bytes | None:
        """The record's key."""
        return self._key

    def offset(self) -> int:
        """The record's offset."""
        return self._offset

    def partition(self) -> int:
        """The record's partition."""
        return self._partition

    def topic(self) -> str:
        """The record's topic."""
        return self._topic

    def error(self) -> None:
        """Never an error."""
        return None


def cart(customer: str, version: int, generation: int = 1, qty: int = 1,
         lines: int = 1, checked_out: bool = False, item_name: str = "Thing") -> CartDetails:
    """A consistent cart-details record: `lines` lines of `qty` items at 10.50."""
    price = Decimal("10.50")
    items = tuple(LineItem(str(i + 1), f"{item_name} {i + 1}", qty, price, price * qty)
                  for i in range(lines))
    return CartDetails(customer, f"{customer}:{generation}", CHECKED_OUT if checked_out else OPEN,
                       items, qty * lines, price * qty * lines, version,
                       EventPosition(str(uuid.uuid5(uuid.NAMESPACE_OID, f"{customer}/{version}")),
                                     0, version * 10),
                       (), "2026-11-22T10:00:00.000000Z")


def wait_until(check: object, timeout_s: float, what: str, every_s: float = 0.1) -> None:
    """Poll `check()` until it is true; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:  # noqa: BLE001 - a server still starting counts as "not yet"
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


class PrivateRedis:
    """A redis-server of its own on a free port and data dir, to kill and restart in tests."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (same port and data) and wait until it answers."""
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.data_dir), "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(client.ping, 15, "the private redis-server")

    def kill(self) -> None:
        """SIGKILL the server and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb in a temp dir, run as user postgres)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """Whether this machine can run one (PostgreSQL 15 binaries, root to switch users)."""
        return ((PG_BIN / "initdb").exists() and shutil.which("runuser") is not None
                and os.geteuid() == 0)

    @property
    def url(self) -> str:
        """postgresql:// URL of its `postgres` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd]

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        assert self.root is not None, "init() first"
        return self.root / "data"

    def init(self) -> None:
        """initdb with trust authentication, in a fresh directory under /tmp owned by postgres."""
        # Not under pytest's tmp_path: its parents are root-only, postgres could not reach it.
        self.root = Path(tempfile.mkdtemp(prefix="cartstream-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data_dir),
                                         "--auth=trust", "-U", "postgres", "--no-sync"),
                       check=True, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        """Start the server (same port and data) and wait until it accepts connections."""
        import psycopg

        self.proc = subprocess.Popen(
            self._as_postgres(str(PG_BIN / "postgres"), "-D", str(self.data_dir), "-p",
                              str(self.port), "-k", str(self.data_dir), "-c",
                              "listen_addresses=127.0.0.1", "-c", "fsync=off"),
            stdout=subprocess.DEVNULL, stderr=open(self.root / "postgres.log", "ab"),  # noqa: SIM115
            start_new_session=True)

        def ready() -> bool:
            with psycopg.connect(self.url, connect_timeout=1) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)

        try:
            wait_until(ready, 30, "the private PostgreSQL")
        except AssertionError:
            log = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"the private PostgreSQL did not start:\n{log}") from None

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Stop the server (SIGINT: fast shutdown; SIGKILL: a crash) and wait until it is gone."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            postmaster = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            postmaster = None
        if postmaster is not None:
            victims = [postmaster]
            if sig == signal.SIGKILL:  # a crash takes the backends down with the postmaster
                victims += _children(postmaster)
            for pid in victims:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            wait_until(lambda: not any(_alive(p) for p in victims), 30, "PostgreSQL to stop")
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def __enter__(self) -> PrivatePostgres:
        self.init()
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop(signal.SIGKILL)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, only not reaped yet


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
            partition: int | None = None) -> None:
    """Produce (key, value) records with acks=all and wait for every acknowledgement."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for k, v in records:
        if partition is None:
            p.produce(topic, v, k)
        else:
            p.produce(topic, v, k, partition=partition)
    assert p.flush(30) == 0


def create_topics(bootstrap: str, topics: Mapping[str, int]) -> None:
    """Create fresh topics (name -> partitions) and wait until the broker's metadata has them."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(n, p, 1) for n, p in topics.items()]).values():
        fut.result(timeout=30)
    wait_for_partitions(bootstrap, topics)


def wait_for_partitions(bootstrap: str, topics: Mapping[str, int],
                        timeout_s: float = 30) -> None:
    """Wait until the broker's metadata shows each topic with its number of partitions.

    Creating or growing a topic returns once the controller has it; the broker a client asks
    may learn it a moment later, and until then it answers with no (or the old) partitions.
    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})

    def shown() -> bool:
        known = admin.list_topics(timeout=5).topics
        return all(t in known and len(known[t].partitions) == n for t, n in topics.items())

    wait_until(shown, timeout_s, f"the broker's metadata to show {dict(topics)}")


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Partition -> the group's committed offset (-1001 when none)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {tp.partition: tp.offset
                for tp in c.committed([TopicPartition(topic, p) for p in parts], timeout=10)}
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> high watermark."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from cart_contract.retry import retrying

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cartstream-test-probe"})

    def ask() -> dict[int, int]:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts}

    try:
        # A topic created a moment ago may not have its leaders yet (NOT_LEADER_FOR_PARTITION).
        return retrying(f"end offsets of {topic}", on=KafkaException, deadline_s=20,
                        first_s=0.2, max_s=1.0).call(ask)
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 30) -> list[object]:
    """The first `expect` records of a topic (fails after timeout_s)."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out: list[object] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect:
            assert time.monotonic() < deadline, f"{topic}: {len(out)} of {expect} records"
            out.extend(m for m in c.consume(expect - len(out), 0.5) if m.error() is None)
        return out
    finally:
        c.close()


def upsert_carts(conn: object, carts: Sequence[CartDetails]) -> int:
    """The postgres writer's upsert for carts built in a test (their encoding becomes `doc`)."""
    from cart_contract import encode_cart_details
    from connectors.stores import upsert_cart_docs

    return upsert_cart_docs(conn, [(c, encode_cart_details(c)) for c in carts])  # type: ignore[arg-type]


def fresh_database(database_url: str, name: str) -> str:
    """CREATE DATABASE `name` on the server of `database_url`; return its URL."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url.rsplit("/", 1)[0] + f"/{name}"


def private_config(kafka_bootstrap: str, redis_url: str, database_url: str, unique: str,
                   partitions: int = 2) -> Config:
    """A Config whose topics, groups, Redis keys and channel nobody else uses (topics created)."""
    cfg = Config(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url,
                 database_url=database_url, topic_cart_details=f"c-{unique}-details",
                 topic_products=f"c-{unique}-products", topic_dead_letter=f"c-{unique}-dead",
                 group_prefix=f"t-{unique}", key_prefix=f"t:{unique}:",
                 updates_channel=f"t:{unique}:cart-updated", batch_wait_ms=50,
                 retry_max_s=0.5)
    create_topics(kafka_bootstrap, {cfg.topic_cart_details: partitions,
                                    cfg.topic_products: partitions, cfg.topic_dead_letter: 1})
    return cfg


def drain(cfg: Config, name: str, sink: object | None = None, timeout_s: float = 60) -> object:
    """Run one sink in this thread until it has stored its whole topic; return the sink."""
    import threading

    from connectors.consumer import DeadLetters, Stopper, run
    from connectors.service import build_sink

    sink = sink or build_sink(name, cfg)
    until = {p: o for p, o in end_offsets(cfg.kafka_bootstrap, cfg.topic_of(name)).items() if o}
    stopper = Stopper()
    timer = threading.Timer(timeout_s, stopper.stop)  # never hang a test
    timer.start()
    try:
        run(bootstrap=cfg.kafka_bootstrap, topic=cfg.topic_of(name), group=cfg.group(name),
            store=sink,  # type: ignore[arg-type]
            dead_letters=DeadLetters(cfg.kafka_bootstrap, cfg.topic_dead_letter, "test"),
            stopper=stopper, batch_max=cfg.batch_max, batch_wait_s=cfg.batch_wait_s,
            max_backoff_s=cfg.retry_max_s, until=until)
    finally:
        timer.cancel()
    assert not stopper.stopped, f"{name} sink did not catch up within {timeout_s}s"
    return sink
