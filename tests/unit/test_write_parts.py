"""The write API's parts without I/O: config, publisher (fake librdkafka), catalog (fake Redis)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import redis

from cart_contract.layout import catalog_ready_key, product_key
from cart_write import publisher as publisher_mod
from cart_write.catalog import NoCatalog, RedisCatalog
from cart_write.config import Config
from cart_write.publisher import Ack, ConfluentPublisher, PublishUnavailable, confluent_settings

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
    # librdkafka's reconnect noise; ours says it once
    assert loggers["kafka"]["level"] in ("CRITICAL", logging.CRITICAL)


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


# ---------------------------------------------------------------- publisher


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


def confluent(**overrides: Any) -> tuple[ConfluentPublisher, list[FakeLibrdkafka]]:
    built: list[FakeLibrdkafka] = []

    def factory(settings: dict[str, Any]) -> FakeLibrdkafka:
        built.append(FakeLibrdkafka(settings))
        return built[-1]

    return ConfluentPublisher(Config(**overrides), producer_factory=factory), built


def test_producer_settings_are_durable_idempotent_bounded_and_java_partitioned() -> None:
    s = confluent_settings(Config(kafka_bootstrap="a:1,b:2"))
    assert s["acks"] == "all" and s["enable.idempotence"] is True
    assert s["partitioner"] == "murmur2_random"  # the partition Java clients pick for a key
    assert s["bootstrap.servers"] == "a:1,b:2"
    assert 0 < s["message.timeout.ms"] <= 10_000 and 0 < s["request.timeout.ms"] <= 10_000


def test_publish_waits_for_the_ack() -> None:
    pub, built = confluent()
    try:
        assert pub.publish("t", b"k", b"v") == Ack(3, 1)
        assert pub.publish("t", b"k", b"v2") == Ack(3, 2)
        assert len(built) == 1 and built[0].sent == [("t", b"k", b"v"), ("t", b"k", b"v2")]
        assert built[0].settings["error_cb"] is not None
    finally:
        pub.close()


@pytest.mark.parametrize("outcome", [FakeError(-192), BufferError("queue full")])
def test_a_failed_or_refused_record_is_unavailable(outcome: Any) -> None:
    pub, built = confluent()
    try:
        pub.publish("t", b"k", b"v")
        built[0].outcomes.append(outcome)
        with pytest.raises(PublishUnavailable):
            pub.publish("t", b"k", b"v")
        assert pub.publish("t", b"k", b"v").partition == 3
    finally:
        pub.close()


def test_it_fails_fast_while_all_brokers_are_down_and_probes_once_a_second(
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


def test_a_fatal_error_replaces_the_producer_and_a_fork_builds_its_own(
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


def test_ready_probes_the_broker_and_caches_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, built = confluent()
    now = [50.0]
    monkeypatch.setattr(publisher_mod.time, "monotonic", lambda: now[0])
    probes: list[float] = []
    answer: list[Exception | None] = [publisher_mod.KafkaException("timed out")]

    def list_topics(topic: str, timeout: float) -> Any:
        probes.append(timeout)
        if answer[0] is not None:
            raise answer[0]
        return object()

    try:
        pub.publish("t", b"k", b"v")
        built[0].list_topics = list_topics  # type: ignore[attr-defined]
        assert pub.ready() is True and probes == []  # a recent ack proves readiness
        now[0] += 2
        assert pub.ready() is False and len(probes) == 1
        answer[0] = None
        assert pub.ready() is False and len(probes) == 1  # cached for a second
        now[0] += 1
        assert pub.ready() is True and len(probes) == 2
        assert probes[0] == Config().request_timeout_ms / 1000
    finally:
        pub.close()


class QuickAck(Config):
    """Config with a short ack wait, so a record that is never settled costs the test little."""

    @property
    def ack_timeout_s(self) -> float:
        return 0.05


def test_a_record_never_acknowledged_is_unavailable_after_the_ack_wait() -> None:
    built: list[FakeLibrdkafka] = []

    def silent(settings: dict[str, Any]) -> FakeLibrdkafka:
        built.append(FakeLibrdkafka(settings))
        built[-1].poll = lambda timeout: time.sleep(0.001) or 0  # type: ignore[method-assign]
        return built[-1]

    pub = ConfluentPublisher(QuickAck(), producer_factory=silent)
    try:
        with pytest.raises(PublishUnavailable, match="in time"):
            pub.publish("t", b"k", b"v")
    finally:
        pub.close()


def test_close_flushes_the_producer_once_and_stops_polling() -> None:
    pub, built = confluent()
    pub.close()  # nothing built yet: nothing to do
    pub, built = confluent()
    flushed: list[float] = []
    pub.publish("t", b"k", b"v")
    built[0].flush = lambda timeout: flushed.append(timeout) or 0  # type: ignore[method-assign]
    pub.close()
    assert flushed == [Config().ack_timeout_s]


def test_many_concurrent_requests_each_get_their_own_ack() -> None:
    pub, built = confluent()
    acks: dict[int, Ack] = {}
    errors: list[BaseException] = []

    def request(i: int) -> None:
        try:
            acks[i] = pub.publish("t", b"k", str(i).encode())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(64)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert not errors and not any(t.is_alive() for t in threads)
        # The fake numbers records in the order produced: request i's ack is its own record's.
        sent = {value: n for n, (_, _, value) in enumerate(built[0].sent, start=1)}
        assert {i: a.offset for i, a in acks.items()} == {i: sent[str(i).encode()]
                                                          for i in range(64)}
    finally:
        pub.close()


def test_deliveries_settled_by_the_closing_flush_wake_their_requests() -> None:
    built: list[FakeLibrdkafka] = []

    def flush_only(settings: dict[str, Any]) -> FakeLibrdkafka:
        fake = FakeLibrdkafka(settings)
        real_poll = fake.poll
        fake.poll = lambda timeout: time.sleep(0.001) or 0  # type: ignore[method-assign]
        # Settles the record once the poll thread (polling every ms) has seen `closed`.
        fake.flush = lambda timeout: time.sleep(0.1) or real_poll(0)  # type: ignore[method-assign]
        built.append(fake)
        return fake

    pub = ConfluentPublisher(Config(), producer_factory=flush_only)
    got: list[Ack] = []
    waiter = threading.Thread(target=lambda: got.append(pub.publish("t", b"k", b"v")))
    waiter.start()
    deadline = time.monotonic() + 5
    while not (built and built[0].sent) and time.monotonic() < deadline:
        time.sleep(0.001)
    pub.close()  # its flush runs the callback on this thread; the request must still wake
    waiter.join(timeout=5)
    assert not waiter.is_alive() and got == [Ack(3, 1)]
