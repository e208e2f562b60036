"""Readiness logic and metrics without I/O: cache, lag thresholds, labels, the text format."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from cart_aggregator import metrics as agg_metrics
from cart_web.metrics import OTHER_ROUTE, HttpMetrics, LagReadiness, ProbeServer
from cart_write import publisher as publisher_module
from cart_write.app import create_app
from cart_write.config import Config
from cart_write.publisher import PublishUnavailable, _Readiness
from connectors.consumer import BatchDone
from connectors.metrics import LagMonitor, SinkMetrics, partition_lag
from tests.support.idempotency import MemoryIdempotencyStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- write API readiness cache


def test_the_broker_probe_is_cached_for_at_most_one_second(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(publisher_module.time, "monotonic", clock)
    answers = [True, False]
    calls: list[float] = []

    def probe() -> bool:
        calls.append(clock.now)
        return answers[len(calls) - 1]

    ready = _Readiness(probe)
    assert ready() is True and ready() is True
    clock.now += 0.9
    assert ready() is True  # cached
    assert len(calls) == 1
    clock.now += 0.2  # 1.1 s after the probe: asked again
    assert ready() is False
    assert calls == [1000.0, 1001.1]
    assert _Readiness.CACHE_S <= 1.0


def test_a_recent_ack_is_ready_without_probing(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(publisher_module.time, "monotonic", clock)
    calls: list[int] = []
    ready = _Readiness(lambda: calls.append(1) or False)
    ready.acked()
    clock.now += 0.5
    assert ready() is True and calls == []
    clock.now += 1.0
    assert ready() is False and calls == [1]


# ---------------------------------------------------------------- consumer readiness


def test_not_ready_without_partitions_even_at_zero_lag() -> None:
    r = LagReadiness(max_lag=10, max_age_s=15)
    r.note_lag(0, now=100)
    ok, doc = r.check(now=101)
    assert not ok and doc["reason"] == "no partitions assigned"


@pytest.mark.parametrize(("lag", "ready"), [(0, True), (10, True), (11, False), (5000, False)])
def test_ready_up_to_the_lag_threshold(lag: int, ready: bool) -> None:
    r = LagReadiness(max_lag=10, max_age_s=15)
    r.note_assigned({0, 1})
    r.note_lag(lag, now=100)
    ok, doc = r.check(now=101)
    assert ok is ready
    assert doc["lag"] == lag and doc["maxLag"] == 10 and doc["partitions"] == 2


def test_a_lag_not_measured_lately_is_not_ready() -> None:
    r = LagReadiness(max_lag=10, max_age_s=15)
    r.note_assigned({0})
    assert r.check(now=1)[0] is False  # never measured
    r.note_lag(0, now=100)
    assert r.check(now=115)[0] is True
    ok, doc = r.check(now=115.5)
    assert not ok and "unknown" in doc["reason"]


@pytest.mark.parametrize(("committed", "low", "high", "lag"), [
    (40, 0, 100, 60), (100, 0, 100, 0), (-1001, 0, 100, 100), (-1001, 30, 100, 70),
    (5, 30, 100, 70),  # committed below the low watermark (records deleted): from the low one
])
def test_partition_lag(committed: int, low: int, high: int, lag: int) -> None:
    assert partition_lag(committed, low, high) == lag


# ---------------------------------------------------------------- sinks


def sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_sink_metrics_count_batches_and_dead_letters_by_reason() -> None:
    sink = f"unit-{uuid.uuid4().hex[:6]}"
    observed = SinkMetrics(sink, LagReadiness(10, 15))
    observed.on_batch(BatchDone(5, 2, {0: 5}, 0.003, ("MISSING_FIELD", "TOMBSTONE")))
    observed.on_batch(BatchDone(3, 1, {0: 8}, 0.2, ("MISSING_FIELD",)))
    assert sample("cartstream_sink_records_total", {"sink": sink}) == 8
    assert sample("cartstream_sink_dead_letters_total",
                  {"sink": sink, "reason": "MISSING_FIELD"}) == 2
    assert sample("cartstream_sink_dead_letters_total",
                  {"sink": sink, "reason": "TOMBSTONE"}) == 1
    assert sample("cartstream_sink_batch_duration_seconds_count", {"sink": sink}) == 2
    assert sample("cartstream_sink_batch_duration_seconds_bucket",
                  {"sink": sink, "le": "0.005"}) == 1


def test_sink_lag_of_owned_partitions_sets_gauges_and_readiness() -> None:
    sink = f"unit-{uuid.uuid4().hex[:6]}"
    readiness = LagReadiness(max_lag=50, max_age_s=15)
    observed = SinkMetrics(sink, readiness)
    asked: list[list[int]] = []
    offsets = {0: (40, 0, 100), 1: (7, 0, 7), 2: (0, 0, 9)}

    def fetch(parts: Any) -> dict[int, tuple[int, int, int]]:
        asked.append(list(parts))
        return {p: offsets[p] for p in parts}

    monitor = LagMonitor(sink, fetch, readiness, 60, threading.Event())
    observed.on_assignment(frozenset({0, 1}))
    monitor.refresh()
    assert asked == [[0, 1]]
    assert sample("cartstream_sink_consumer_lag", {"sink": sink, "partition": "0"}) == 60
    assert sample("cartstream_sink_assigned_partitions", {"sink": sink}) == 2
    assert readiness.check()[0] is False  # 60 > 50
    observed.on_assignment(frozenset({1, 2}))  # partition 0 went to another member
    monitor.refresh()
    assert sample("cartstream_sink_consumer_lag", {"sink": sink, "partition": "0"}) is None
    assert sample("cartstream_sink_consumer_lag", {"sink": sink, "partition": "2"}) == 9
    assert readiness.check()[0] is True


def test_aggregator_readiness_follows_its_sources_and_lag() -> None:
    topic = f"agg-ready-{uuid.uuid4().hex[:6]}"
    agg_metrics.readiness = LagReadiness(max_lag=5, max_age_s=15)
    try:
        agg_metrics.note_assigned(topic, 0, 90)
        agg_metrics.note_assigned(topic, 1, -2)  # from the beginning: position not known yet
        monitor = agg_metrics.LagMonitor(lambda t, p: 100 if t == topic else 0, 60)
        monitor.refresh()
        ok, doc = agg_metrics.readiness.check()
        assert not ok and doc["lag"] == 10
        agg_metrics.note_positions({(topic, 0): 97})
        monitor.refresh()
        assert agg_metrics.readiness.check()[0] is True
    finally:
        agg_metrics.readiness = None
        for p in (0, 1):
            agg_metrics.positions.pop((topic, p), None)
            agg_metrics.assigned.discard((topic, p))


# ---------------------------------------------------------------- HTTP metrics


def test_http_metrics_label_route_templates_never_raw_paths() -> None:
    registry = CollectorRegistry()
    http = HttpMetrics("unit", ["/api/v1/add", "/healthz"], registry=registry)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("bug")
        start_response("404 NOT FOUND" if environ["PATH_INFO"] != "/api/v1/add" else "202 ",
                       [])
        return [b""]

    wrapped = http.wrap_wsgi(app)
    for path in ("/api/v1/add", "/api/v1/add", *(f"/scan/{i}" for i in range(50))):
        wrapped({"PATH_INFO": path, "REQUEST_METHOD": "POST"}, lambda *a: None)
    wrapped({"PATH_INFO": "/healthz", "REQUEST_METHOD": "BREW"}, lambda *a: None)
    with pytest.raises(RuntimeError):
        wrapped({"PATH_INFO": "/boom", "REQUEST_METHOD": "GET"}, lambda *a: None)

    def count(route: str, method: str, status: str) -> float | None:
        return registry.get_sample_value("unit_http_requests_total",
                                         {"route": route, "method": method, "status": status})

    assert count("/api/v1/add", "POST", "202") == 2
    assert count(OTHER_ROUTE, "POST", "404") == 50
    assert count("/healthz", "OTHER", "404") == 1
    assert count(OTHER_ROUTE, "GET", "500") == 1
    routes = {s.labels["route"] for f in registry.collect() for s in f.samples
              if "route" in s.labels}
    assert routes == {"/api/v1/add", "/healthz", OTHER_ROUTE}
    assert registry.get_sample_value("unit_http_request_duration_seconds_count",
                                     {"route": OTHER_ROUTE}) == 51


class _Publisher:
    def __init__(self) -> None:
        self.down = False

    def publish(self, topic: str, key: bytes, value: bytes) -> Any:
        from cart_write.publisher import Ack

        if self.down:
            raise PublishUnavailable("down")
        return Ack(0, 1)

    def ready(self) -> bool:
        return not self.down

    def close(self) -> None:
        pass


def test_write_api_metrics_parse_and_count_by_route_status_and_idempotency() -> None:
    from cart_write.catalog import NoCatalog

    pub = _Publisher()
    client = create_app(Config(), publisher=pub, catalog=NoCatalog(),
                        idempotency=MemoryIdempotencyStore()).test_client()

    def families() -> dict[str, Any]:
        resp = client.get("/metrics")
        assert resp.status_code == 200
        assert resp.content_type.startswith("text/plain")
        return {f.name: f for f in text_string_to_metric_families(resp.get_data(as_text=True))}

    def value(fams: dict[str, Any], family: str, name: str, **labels: str) -> float:
        return sum(s.value for s in fams[family].samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    before = families()
    body = orjson.dumps({"customerId": "m1", "itemId": "1", "qty": 1})
    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}", "Content-Type": "application/json"}
    assert client.post("/api/v1/add", data=body, headers=key).status_code == 202
    assert client.post("/api/v1/add", data=body, headers=key).status_code == 202  # replayed
    pub.down = True
    assert client.post("/api/v1/add", data=body,
                       headers={"Content-Type": "application/json"}).status_code == 503
    assert client.get(f"/no/such/{uuid.uuid4().hex}").status_code == 404
    after = families()

    def delta(family: str, name: str, **labels: str) -> float:
        return value(after, family, name, **labels) - value(before, family, name, **labels)

    req = ("cartstream_write_http_requests", "cartstream_write_http_requests_total")
    assert delta(*req, route="/api/v1/add", method="POST", status="202") == 2
    assert delta(*req, route="/api/v1/add", method="POST", status="503") == 1
    assert delta(*req, route="other", method="GET", status="404") == 1
    assert delta(*req, route="/metrics", method="GET", status="200") == 1
    assert delta("cartstream_write_http_request_duration_seconds",
                 "cartstream_write_http_request_duration_seconds_count", route="/api/v1/add") == 3
    idem = ("cartstream_write_idempotency", "cartstream_write_idempotency_total")
    assert delta(*idem, outcome="first") == 1
    assert delta(*idem, outcome="replayed") == 1


# ---------------------------------------------------------------- the probe server


def test_probe_server_answers_metrics_healthz_and_readyz() -> None:
    readiness = LagReadiness(max_lag=0, max_age_s=15)
    server = ProbeServer(readiness.check)
    port = server.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    try:
        assert get("/healthz")[0] == 200
        status, body = get("/readyz")
        assert status == 503 and orjson.loads(body)["reason"] == "no partitions assigned"
        readiness.note_assigned({0})
        readiness.note_lag(0)
        status, body = get("/readyz")
        assert status == 200 and orjson.loads(body)["status"] == "ready"
        status, body = get("/metrics")
        assert status == 200 and list(text_string_to_metric_families(body.decode()))
        assert get("/elsewhere")[0] == 404
    finally:
        server.stop()


# ---------------------------------------------------------------- the loop's callbacks


class _Consumer:
    def commit(self, offsets: Any, asynchronous: bool) -> None:
        pass


class _Dead:
    def send(self, poisons: Any) -> None:
        self.sent = poisons


def test_the_loop_reports_assignments_and_each_batch_time_and_dead_letter_reasons() -> None:
    from confluent_kafka import TopicPartition

    from cart_contract import ContractError
    from connectors.consumer import BatchLoop, Stopper
    from connectors.records import Poison
    from tests.support.connectors import FakeMessage

    class Sink:
        def prepare(self, batch: Any) -> Any:
            return batch

        def write(self, batch: Any) -> list[Poison]:
            threading.Event().wait(0.05)
            return [Poison(batch[0], ContractError("TOMBSTONE", "no value")),
                    Poison(batch[1], ValueError("bad"))]

    seen: list[frozenset[int]] = []
    done: list[BatchDone] = []
    lp = BatchLoop(_Consumer(), "t", Sink(), _Dead(), Stopper(),  # type: ignore[arg-type]
                   max_backoff_s=0.05, revoke_wait_s=0.3, on_batch=done.append,
                   on_assignment=seen.append)
    tps = [TopicPartition("t", 0), TopicPartition("t", 1)]
    lp.on_assign(None, tps)  # type: ignore[arg-type]
    batch = [FakeMessage(b"x", b"k", o, 0) for o in range(3)]
    lp.submit(batch, batch)  # type: ignore[arg-type]
    assert lp.finish() is True
    assert done[0].records == 3 and done[0].poison == 2
    assert done[0].reasons == ("TOMBSTONE", "ValueError")
    assert 0.05 <= done[0].seconds < 5
    lp.on_revoke(None, tps[:1])  # type: ignore[arg-type]
    lp.on_lost(None, tps[1:])  # type: ignore[arg-type]
    assert seen == [frozenset({0, 1}), frozenset({1}), frozenset()]
