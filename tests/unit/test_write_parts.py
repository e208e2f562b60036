"""The write API's parts without I/O: config, publisher (fake producer), catalog (fake Redis)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import redis
from kafka.errors import IllegalStateError, KafkaTimeoutError, NotLeaderForPartitionError

from cart_contract.layout import catalog_ready_key, product_key
from cart_write import publisher as publisher_mod
from cart_write.catalog import NoCatalog, RedisCatalog
from cart_write.config import Config
from cart_write.publisher import Ack, KafkaPublisher, PublishUnavailable, producer_settings

# ---------------------------------------------------------------- config


def test_config_defaults_fit_the_local_stack() -> None:
    c = Config.from_env({})
    assert (c.host, c.port, c.kafka_bootstrap, c.topic_cart_events) == (
        "127.0.0.1", 8080, "localhost:9092", "cart-events")
    assert c.redis_url == "redis://127.0.0.1:6379/0"
    assert c.workers == 2 and c.threads >= 1
    assert c.catalog_check is True
    assert c.max_body_bytes == 64 * 1024


def test_config_reads_the_shared_variable_names() -> None:
    c = Config.from_env({
        "WRITE_HOST": "0.0.0.0", "WRITE_PORT": "9999", "WRITE_WORKERS": "4",
        "WRITE_THREADS": "8", "KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
        "TOPIC_CART_EVENTS": "ev", "REDIS_URL": "redis://r:1/2", "WRITE_CATALOG_CHECK": "off",
        "WRITE_LINGER_MS": "5", "WRITE_KAFKA_DELIVERY_TIMEOUT_MS": "9000",
        "WRITE_LOG_LEVEL": "debug",
    })
    assert (c.host, c.port, c.workers, c.threads) == ("0.0.0.0", 9999, 4, 8)
    assert (c.kafka_bootstrap, c.topic_cart_events, c.redis_url) == (
        "k1:9092,k2:9092", "ev", "redis://r:1/2")
    assert c.catalog_check is False and c.linger_ms == 5 and c.log_level == "DEBUG"
    assert c.ack_timeout_s == pytest.approx(10.0)


def test_empty_variables_mean_default() -> None:
    assert Config.from_env({"WRITE_PORT": "", "KAFKA_BOOTSTRAP": ""}) == Config()


@pytest.mark.parametrize("env", [
    {"WRITE_PORT": "http"}, {"WRITE_WORKERS": "0"}, {"WRITE_CATALOG_CHECK": "maybe"},
    {"WRITE_REDIS_TIMEOUT_S": "soon"}, {"WRITE_LOG_LEVEL": "LOUD"},
    {"WRITE_KAFKA_DELIVERY_TIMEOUT_MS": "1000", "WRITE_KAFKA_REQUEST_TIMEOUT_MS": "3000"},
])
def test_bad_settings_fail_at_start_with_the_variable_name(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="WRITE_"):
        Config.from_env(env)


def test_granian_logging_config_covers_our_loggers() -> None:
    from cart_write.server import build_server

    server = build_server(Config.from_env({"WRITE_LOG_LEVEL": "debug"}))
    loggers = server.log_config["loggers"]
    # granian turns level names into numbers
    assert loggers["cart_write"]["level"] in ("DEBUG", logging.DEBUG)
    # kafka-python's reconnect noise; ours says it once
    assert loggers["kafka"]["level"] in ("CRITICAL", logging.CRITICAL)


# ---------------------------------------------------------------- publisher


class FakeFuture:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.timeout: float | None = None

    def get(self, timeout: float | None = None) -> Any:
        self.timeout = timeout
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class Meta:
    def __init__(self, partition: int, offset: int) -> None:
        self.partition, self.offset = partition, offset


class FakeProducer:
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.outcomes: list[Any] = []
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[FakeFuture] = []
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        fut = FakeFuture(self.outcomes.pop(0) if self.outcomes else Meta(1, len(self.sent)))
        self.futures.append(fut)
        return fut

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class Factory:
    """Builds FakeProducers, or raises what it is told to."""

    def __init__(self) -> None:
        self.built: list[FakeProducer] = []
        self.fail_with: Exception | None = None

    def __call__(self, **settings: Any) -> FakeProducer:
        if self.fail_with is not None:
            raise self.fail_with
        p = FakeProducer(**settings)
        self.built.append(p)
        return p


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def kp(factory: Factory) -> KafkaPublisher:
    return KafkaPublisher(Config(), producer_factory=factory, admin_factory=_no_admin)


def _no_admin(**_: Any) -> Any:
    raise AssertionError("no admin client expected here")


def test_producer_settings_are_durable_idempotent_and_bounded() -> None:
    s = producer_settings(Config(kafka_bootstrap="a:1,b:2"))
    assert s["acks"] == "all" and s["enable_idempotence"] is True
    assert s["bootstrap_servers"] == ["a:1", "b:2"]
    for bound in ("request_timeout_ms", "delivery_timeout_ms", "max_block_ms",
                  "bootstrap_timeout_ms"):
        assert 0 < s[bound] <= 10_000, bound


def test_the_producer_is_created_lazily_once(kp: KafkaPublisher, factory: Factory) -> None:
    assert factory.built == []
    assert kp.publish("t", b"k", b"v") == Ack(1, 1)
    assert kp.publish("t", b"k", b"v2") == Ack(1, 2)
    assert len(factory.built) == 1
    assert factory.built[0].sent == [("t", b"k", b"v"), ("t", b"k", b"v2")]
    assert factory.built[0].futures[0].timeout == Config().ack_timeout_s


def test_a_forked_process_builds_its_own_producer(
    kp: KafkaPublisher, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    kp.publish("t", b"k", b"v")
    monkeypatch.setattr(publisher_mod.os, "getpid", lambda: 424242)
    kp.publish("t", b"k", b"v")
    assert len(factory.built) == 2


@pytest.mark.parametrize("error", [
    KafkaTimeoutError("Expiring 1 record(s)"), NotLeaderForPartitionError(),
    IllegalStateError("broken"),
])
def test_a_failed_record_is_unavailable_and_the_producer_is_replaced(
    kp: KafkaPublisher, factory: Factory, error: Exception
) -> None:
    kp.publish("t", b"k", b"v")
    factory.built[0].outcomes.append(error)
    with pytest.raises(PublishUnavailable):
        kp.publish("t", b"k", b"v")
    assert kp.publish("t", b"k", b"v") == Ack(1, 1)
    assert len(factory.built) == 2
    first = factory.built[0]
    deadline = time.monotonic() + 5
    while not first.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.closed


def test_a_wedged_producer_is_force_closed(kp: KafkaPublisher, factory: Factory) -> None:
    # kafka-python 3.0.12 after an outage: the future never settles and close() cannot flush.
    kp.publish("t", b"k", b"v")
    wedged = factory.built[0]

    class Sender:
        forced = threading.Event()

        def force_close(self) -> None:
            self.forced.set()

        def join(self, timeout: float | None = None) -> None:
            pass

    def close(timeout: float | None = None) -> None:
        raise KafkaTimeoutError("Timeout waiting for future")

    wedged._sender = Sender()  # type: ignore[attr-defined]
    wedged.close = close  # type: ignore[method-assign]
    stuck = FakeFuture(KafkaTimeoutError("Timeout after waiting for 6.0 secs."))
    stuck.is_done = False  # type: ignore[attr-defined]
    wedged.send = lambda topic, key, value: stuck  # type: ignore[method-assign]
    with pytest.raises(PublishUnavailable):
        kp.publish("t", b"k", b"v")
    assert Sender.forced.wait(5)
    assert kp.publish("t", b"k", b"v") == Ack(1, 1)
    assert len(factory.built) == 2


def test_only_one_of_many_failing_requests_replaces_the_producer(
    kp: KafkaPublisher, factory: Factory
) -> None:
    kp.publish("t", b"k", b"v")
    old = factory.built[0]
    kp._on_failure(old, KafkaTimeoutError("expired"), None)
    kp.publish("t", b"k", b"v")
    kp._on_failure(old, KafkaTimeoutError("expired"), None)  # late report about the old one
    kp.publish("t", b"k", b"v")
    assert len(factory.built) == 2


def test_an_unreachable_broker_fails_fast_until_the_backoff_ends(
    kp: KafkaPublisher, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(publisher_mod.time, "monotonic", lambda: now[0])
    factory.fail_with = KafkaTimeoutError("Unable to bootstrap")
    with pytest.raises(PublishUnavailable, match="unreachable"):
        kp.publish("t", b"k", b"v")
    factory.fail_with = None
    with pytest.raises(PublishUnavailable, match="recent"):
        kp.publish("t", b"k", b"v")
    assert factory.built == []
    now[0] += KafkaPublisher.BUILD_BACKOFF_S + 0.1
    assert kp.publish("t", b"k", b"v") == Ack(1, 1)


class FakeAdmin:
    calls = 0
    fail: Exception | None = None

    def __init__(self, **settings: Any) -> None:
        FakeAdmin.calls += 1
        if FakeAdmin.fail is not None:
            raise FakeAdmin.fail

    def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{}]}

    def close(self) -> None:
        pass


def test_ready_probes_the_broker_and_caches_the_answer(
    factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [50.0]
    monkeypatch.setattr(publisher_mod.time, "monotonic", lambda: now[0])
    FakeAdmin.calls, FakeAdmin.fail = 0, KafkaTimeoutError("Unable to bootstrap")
    kp = KafkaPublisher(Config(), producer_factory=factory, admin_factory=FakeAdmin)
    assert kp.ready() is False
    FakeAdmin.fail = None
    assert kp.ready() is False  # cached
    assert FakeAdmin.calls == 1
    now[0] += 2
    assert kp.ready() is True
    assert FakeAdmin.calls == 2
    # A recent ack proves readiness without a probe.
    now[0] += 5
    kp.publish("t", b"k", b"v")
    assert kp.ready() is True
    assert FakeAdmin.calls == 2


def test_close_flushes_the_producer(kp: KafkaPublisher, factory: Factory) -> None:
    kp.close()  # nothing built yet: nothing to do
    kp.publish("t", b"k", b"v")
    kp.close()
    assert factory.built[0].closed


# ---------------------------------------------------------------- catalog


class FakePipe:
    def __init__(self, redis_: FakeRedis) -> None:
        self.redis, self.ops = redis_, []

    def exists(self, key: str) -> None:
        self.ops.append(("exists", key))

    def hexists(self, key: str, field: str) -> None:
        self.ops.append(("hexists", key, field))

    def execute(self) -> list[Any]:
        self.redis.calls += 1
        if self.redis.error:
            raise redis.ConnectionError("refused")
        out = []
        for op in self.ops:
            if op[0] == "exists":
                out.append(int(op[1] in self.redis.strings))
            else:
                out.append(op[2] in self.redis.hashes.get(op[1], {}))
        return out


class FakeRedis:
    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.error = False
        self.calls = 0

    def pipeline(self, transaction: bool = True) -> FakePipe:
        return FakePipe(self)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    from cart_write import catalog as catalog_mod

    now = [100.0]
    monkeypatch.setattr(catalog_mod.time, "monotonic", lambda: now[0])
    return now


def test_catalog_is_consulted_only_when_ready(clock: list[float]) -> None:
    r = FakeRedis()
    cat = RedisCatalog("redis://unused", client=r, ready_ttl_s=1.0)
    assert cat.knows("1") is None
    r.strings[catalog_ready_key()] = "1"
    r.hashes[product_key("1")] = {"doc": "{}", "offset": "3"}
    r.hashes[product_key("2")] = {"offset": "4"}  # tombstoned: doc deleted, offset kept
    assert cat.knows("1") is None  # "not ready" is remembered for a second
    clock[0] += 1.1
    assert cat.knows("1") is True
    assert cat.knows("2") is False
    assert cat.knows("3") is False


def test_catalog_reads_the_keys_under_the_connectors_prefix(clock: list[float]) -> None:
    r = FakeRedis()
    r.strings[catalog_ready_key()] = "1"  # another system's keys, without the prefix
    r.hashes[product_key("1")] = {"doc": "{}"}
    cat = RedisCatalog("redis://unused", client=r, key_prefix="t1:")
    assert cat.knows("1") is None
    r.strings[catalog_ready_key("t1:")] = "1"
    r.hashes["t1:product:2"] = {"doc": "{}"}
    clock[0] += 1.1
    assert (cat.knows("1"), cat.knows("2")) == (False, True)


def test_known_products_are_remembered_unknown_ones_never(clock: list[float]) -> None:
    r = FakeRedis()
    r.strings[catalog_ready_key()] = "1"
    r.hashes[product_key("1")] = {"doc": "{}"}
    cat = RedisCatalog("redis://unused", client=r, known_ttl_s=5.0)
    assert cat.knows("1") is True
    assert cat.knows("9") is False
    calls = r.calls
    assert cat.knows("1") is True  # from memory
    assert r.calls == calls
    r.hashes[product_key("9")] = {"doc": "{}"}  # the catalog gains a product: accepted at once
    assert cat.knows("9") is True
    del r.hashes[product_key("1")]
    clock[0] += 5.1
    assert cat.knows("1") is False  # forgotten after the TTL


def test_redis_trouble_skips_the_check_and_backs_off(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    now = clock
    r = FakeRedis()
    r.strings[catalog_ready_key()] = "1"
    r.error = True
    cat = RedisCatalog("redis://unused", client=r, backoff_s=2.0)
    with caplog.at_level(logging.WARNING, logger="cart_write.catalog"):
        assert cat.knows("1") is None
    assert "catalog check skipped" in caplog.text
    assert cat.knows("1") is None
    assert r.calls == 1  # within the backoff Redis is not asked again
    r.error = False
    now[0] += 2.5
    assert cat.knows("1") is False
    assert r.calls == 2


def test_no_catalog_accepts_everything() -> None:
    assert NoCatalog().knows("anything") is None


# ---------------------------------------------------------------- confluent-kafka publisher


class FakeError:
    def __init__(self, code: int, fatal: bool = False) -> None:
        self._code, self._fatal = code, fatal

    def code(self) -> int:
        return self._code

    def fatal(self) -> bool:
        return self._fatal


class FakeMsg:
    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class FakeLibrdkafka:
    """Delivers each record on the next poll(): an ack, or the error queued in `outcomes`."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.pending: list[Any] = []
        self.outcomes: list[Any] = []
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.lock = threading.Lock()

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        if self.outcomes and isinstance(self.outcomes[0], BufferError):
            raise self.outcomes.pop(0)
        with self.lock:
            self.sent.append((topic, key, value))
            self.pending.append((on_delivery, self.outcomes.pop(0) if self.outcomes else None,
                                 len(self.sent)))

    def poll(self, timeout: float) -> int:
        with self.lock:
            due, self.pending = self.pending, []
        for callback, error, n in due:
            callback(error, None if error else FakeMsg(3, n))
        if not due:
            time.sleep(0.001)
        return len(due)

    def flush(self, timeout: float) -> int:
        return 0


def confluent(**overrides: Any) -> tuple[publisher_mod.ConfluentPublisher, list[FakeLibrdkafka]]:
    built: list[FakeLibrdkafka] = []

    def factory(settings: dict[str, Any]) -> FakeLibrdkafka:
        built.append(FakeLibrdkafka(settings))
        return built[-1]

    return publisher_mod.ConfluentPublisher(Config(**overrides), producer_factory=factory), built


def test_confluent_settings_are_durable_idempotent_bounded_and_java_partitioned() -> None:
    s = publisher_mod.confluent_settings(Config(kafka_bootstrap="a:1,b:2"))
    assert s["acks"] == "all" and s["enable.idempotence"] is True
    assert s["partitioner"] == "murmur2_random"  # the partition Java clients pick for a key
    assert s["bootstrap.servers"] == "a:1,b:2"
    assert 0 < s["message.timeout.ms"] <= 10_000 and 0 < s["request.timeout.ms"] <= 10_000


def test_confluent_publish_waits_for_the_ack() -> None:
    pub, built = confluent()
    try:
        assert pub.publish("t", b"k", b"v") == Ack(3, 1)
        assert pub.publish("t", b"k", b"v2") == Ack(3, 2)
        assert len(built) == 1 and built[0].sent == [("t", b"k", b"v"), ("t", b"k", b"v2")]
        assert built[0].settings["error_cb"] is not None
    finally:
        pub.close()


@pytest.mark.parametrize("outcome", [FakeError(-192), BufferError("queue full")])
def test_confluent_a_failed_or_refused_record_is_unavailable(outcome: Any) -> None:
    pub, built = confluent()
    try:
        pub.publish("t", b"k", b"v")
        built[0].outcomes.append(outcome)
        with pytest.raises(PublishUnavailable):
            pub.publish("t", b"k", b"v")
        assert pub.publish("t", b"k", b"v").partition == 3
    finally:
        pub.close()


def test_confluent_fails_fast_while_all_brokers_are_down_and_probes_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pub, built = confluent()
    now = [1000.0]
    monkeypatch.setattr(publisher_mod.time, "monotonic", lambda: now[0])
    try:
        pub.publish("t", b"k", b"v")
        built[0].settings["error_cb"](FakeError(publisher_mod._ALL_BROKERS_DOWN))
        built[0].outcomes.append(FakeError(-192))
        with pytest.raises(PublishUnavailable):
            pub.publish("t", b"k", b"v")  # the probe: goes to Kafka, which fails it
        with pytest.raises(PublishUnavailable, match="unreachable"):
            pub.publish("t", b"k", b"v")  # within the second: refused without trying
        assert len(built[0].sent) == 2
        now[0] += pub.PROBE_EVERY_S
        assert pub.publish("t", b"k", b"v") == Ack(3, 3)  # the next probe succeeds
        assert pub.publish("t", b"k", b"v") == Ack(3, 4)  # and the outage is over
    finally:
        pub.close()


def test_confluent_a_fatal_error_replaces_the_producer_and_a_fork_builds_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pub, built = confluent()
    try:
        pub.publish("t", b"k", b"v")
        built[0].settings["error_cb"](FakeError(-150, fatal=True))
        pub.publish("t", b"k", b"v")
        monkeypatch.setattr(publisher_mod.os, "getpid", lambda: 424242)
        pub.publish("t", b"k", b"v")
        assert len(built) == 3
    finally:
        pub.close()


def test_the_publisher_is_confluent_kafka() -> None:
    assert isinstance(publisher_mod.build_publisher(Config()), publisher_mod.ConfluentPublisher)
    # The variable that chose kafka-python is gone; a leftover one changes nothing.
    assert Config.from_env({"WRITE_KAFKA_CLIENT": "kafka-python"}) == Config()
