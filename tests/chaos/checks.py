"""The chaos oracle and workload: fold what `cart-events` holds, compare every read model with it.

The catalog is loaded before any workload and never changes during a run, so the fold's
`catalog_at` is one constant dict and the expected carts are unambiguous.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import redis
import requests
from confluent_kafka import Consumer, Producer, TopicPartition

from cart_contract import (
    CartEvent,
    ContractError,
    DeadLetter,
    EventPosition,
    Product,
    cart_details_to_dict,
    decode_cart_event,
    decode_dead_letter,
    encode_product,
)
from cart_contract.layout import cart_key
from cart_contract.settings import client_config
from tests.e2e.conftest import System
from tests.support.fold_model import ReservationModel, fold, to_cart_details
from tests.support.reservations import model_of_topic

# Every HTTP call is bounded: a hang is a failure, never a stuck test.
HTTP_TIMEOUT_S = 30
CONVERGE_TIMEOUT_S = 120


# ----------------------------------------------------------------------------------- catalog


def make_catalog(n: int = 20) -> dict[str, Product]:
    """A fixed catalog of n products with distinct prices and enough stock to matter."""
    return {str(i): Product(str(i), f"Chaos {i}", Decimal(f"{i * 7}.{i % 100:02d}"), 25)
            for i in range(1, n + 1)}


def load_catalog(system: System, catalog: dict[str, Product], timeout_s: float = 60) -> None:
    """Produce the catalog and wait until the catalog sink stored all of it (read API lists it)."""
    produce(system.env["KAFKA_BOOTSTRAP"], system.env["TOPIC_PRODUCTS"],
            [(p.product_id.encode(), encode_product(p)) for p in catalog.values()])
    deadline = time.monotonic() + timeout_s
    with requests.Session() as s:
        for pid in catalog:
            while s.get(f"{system.read_url}/api/v1/products/{pid}",
                        timeout=HTTP_TIMEOUT_S).status_code != 200:
                system.assert_alive()
                assert time.monotonic() < deadline, f"product {pid} never landed"
                time.sleep(0.2)


# ------------------------------------------------------------------------------------- Kafka


@dataclass(frozen=True)
class Record:
    """One record of a topic, as stored."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def produce(bootstrap: str | Mapping[str, Any], topic: str,
            records: Iterable[tuple[bytes | None, bytes | None]],
            partitioner: str = "consistent_random") -> list[tuple[int, int]]:
    """Produce (key, value) records with acks=all; return each one's (partition, offset).

    `murmur2_random` puts a key where the write API (and Java clients) put it."""
    producer = Producer({**client_config(bootstrap), "acks": "all", "linger.ms": 5,
                         "enable.idempotence": True, "partitioner": partitioner})
    records = list(records)
    where: list[tuple[int, int] | None] = [None] * len(records)
    errors: list[str] = []

    def delivered(i: int) -> Any:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                where[i] = (msg.partition(), msg.offset())
        return cb

    for i, (key, value) in enumerate(records):
        producer.produce(topic, value, key, on_delivery=delivered(i))
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors[:3]
    assert all(w is not None for w in where)
    return [w for w in where if w is not None]


def read_topic(bootstrap: str | Mapping[str, Any], topic: str, timeout_s: float = 60
               ) -> list[Record]:
    """Every record of the topic up to its current end, in (partition, offset) order.

    `bootstrap`: bootstrap servers, or a client config (a secure system's `System.kafka()`).
    """
    consumer = Consumer({**client_config(bootstrap), "enable.auto.commit": False,
                         "group.id": f"chaos-oracle-{uuid.uuid4().hex}"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends: dict[int, int] = {}
        start: list[TopicPartition] = []
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                start.append(TopicPartition(topic, p, low))
        nxt = {tp.partition: tp.offset for tp in start}
        out: list[Record] = []
        consumer.assign(start)
        deadline = time.monotonic() + timeout_s
        while any(nxt[p] < ends[p] for p in ends):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for m in consumer.consume(10_000, timeout=0.5):
                if m.error() is not None or m.offset() >= ends[m.partition()]:
                    continue
                out.append(Record(m.partition(), m.offset(), m.key(), m.value()))
                nxt[m.partition()] = m.offset() + 1
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def cart_events(records: Iterable[Record]) -> list[tuple[CartEvent, EventPosition]]:
    """The good events of `cart-events` with their positions; poison is skipped as dead letters."""
    out = []
    for r in records:
        try:
            ev = decode_cart_event(r.value or b"")
        except ContractError:
            continue
        if r.key != ev.customer_id.encode():
            continue  # KEY_MISMATCH: the aggregator dead-letters it
        out.append((ev, EventPosition(ev.event_id, r.partition, r.offset)))
    return out


def dead_letters(system: System) -> list[DeadLetter]:
    """Every entry of the system's dead-letter topic."""
    return [decode_dead_letter(r.value or b"")
            for r in read_topic(system.kafka(), system.env["TOPIC_DEAD_LETTER"])]


# ------------------------------------------------------------------------------------ oracle


def normalise(doc: dict[str, Any]) -> dict[str, Any]:
    """The semantic fields of a cart document (everything but updatedAt and schemaVersion)."""
    keep = ("customerId", "cartId", "status", "totalQty", "totalPrice", "version", "lastEvent",
            "rejected")
    out = {k: doc.get(k) for k in keep}
    out["lineItems"] = [(li["itemId"], li["itemName"], li["qty"], li["unitPrice"],
                         li["totalPrice"]) for li in doc.get("lineItems", [])]
    # The customer's part (absent from a carts row): where the customer is now.
    customer = doc.get("customer")
    out["customer"] = None if customer is None else {
        k: customer.get(k) for k in ("version", "lastEvent", "rejected")}
    return out


def expected_carts(events: list[tuple[CartEvent, EventPosition]],
                   catalog: dict[str, Product],
                   reservations: ReservationModel | None = None,
                   checkout_at: Callable[[CartEvent, Any], Any] | None = None,
                   ) -> dict[str, dict[str, Any]]:
    """customerId -> the normalised cart the fold of the log gives.

    Each checkout's answer is the reservation model's decision over the request topic
    (`reservations`; KeyError when a checkout's request is not in it yet), or `checkout_at`'s;
    without either, every checkout is reserved as added.
    """
    if reservations is not None:
        checkout_at = lambda ev, _: reservations.answers[ev.customer_id, ev.event_id]  # noqa: E731
    states = fold(events, lambda ev: catalog.get(ev.item_id or ""), checkout_at)
    return {c: normalise(cart_details_to_dict(to_cart_details(s))) for c, s in states.items()}


def expected_with_stock(system: System, events: list[tuple[CartEvent, EventPosition]],
                        catalog: dict[str, Product],
                        timeout_s: float = 120) -> dict[str, dict[str, Any]]:
    """`expected_carts` with the checkouts decided as the request topic says, once every
    checkout's request is in it."""
    deadline = time.monotonic() + timeout_s
    while True:
        model = model_of_topic(system.env["KAFKA_BOOTSTRAP"],
                               system.env["TOPIC_CART_RESERVATIONS"])
        try:
            return expected_carts(events, catalog, model)
        except KeyError:
            system.assert_alive()
            assert time.monotonic() < deadline, "a checkout never asked for its reservation"
            time.sleep(0.5)


def check_acked_exactly_once(acks: list[dict[str, Any]], records: list[Record]) -> None:
    """Every 202 is in the log at its partition/offset, and its eventId nowhere else."""
    assert acks, "no request was acknowledged: the scenario tested nothing"
    at = {(r.partition, r.offset): r for r in records}
    places: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for r in records:
        try:
            places[decode_cart_event(r.value or b"").event_id].add((r.partition, r.offset))
        except ContractError:
            continue
    acked: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for ack in acks:
        pos = (ack["partition"], ack["offset"])
        acked[ack["eventId"]].add(pos)
        assert pos in at, f"acknowledged event lost: {ack}"
        assert decode_cart_event(at[pos].value or b"").event_id == ack["eventId"], ack
    # Retries with one Idempotency-Key share an eventId: one record per acknowledged attempt.
    wrong = {eid: (sorted(places[eid]), sorted(pos)) for eid, pos in acked.items()
             if places[eid] != pos}
    assert not wrong, f"acknowledged events stored more than once: {list(wrong.items())[:5]}"


# ------------------------------------------------------------------------------- read models


class ReadModels:
    """What Redis, PostgreSQL and the read API of one system say about carts."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.prefix = system.env["REDIS_KEY_PREFIX"]
        self.redis = redis.Redis.from_url(system.env["REDIS_URL"], socket_timeout=10)
        self.http = requests.Session()

    def key(self, customer: str) -> str:
        """The customer's Redis key."""
        return cart_key(customer, self.prefix)

    def redis_docs(self, customers: list[str]) -> dict[str, dict[str, Any] | None]:
        """customerId -> the normalised Redis doc (None when the key has no doc)."""
        pipe = self.redis.pipeline(transaction=False)
        for c in customers:
            pipe.hget(self.key(c), "doc")
        return {c: None if raw is None else normalise(orjson.loads(raw))
                for c, raw in zip(customers, pipe.execute(), strict=True)}

    def pg_docs(self) -> dict[str, dict[str, Any]]:
        """customerId -> the normalised doc of its `customers` row; the cart rows checked too.

        A customer's current cart row, once it holds the record's cart version, is the record
        without its customer part (an order's row stays as at checkout); a customer with no
        cart opened (generation 0) has no cart row at all.
        """
        with psycopg.connect(self.system.env["DATABASE_URL"], connect_timeout=10) as conn:
            customers = conn.execute("SELECT customer_id, version, doc FROM customers").fetchall()
            carts = {r[0]: r[1:] for r in conn.execute(
                "SELECT cart_id, version, status, total_price, doc FROM carts").fetchall()}
        out = {}
        for cid, version, doc in customers:
            assert version == doc["customer"]["version"], cid
            out[cid] = normalise(doc)
            row = carts.get(doc["cartId"])
            if doc["cartId"].endswith(":0"):
                assert row is None, f"phantom cart row {doc['cartId']}"
                continue
            if row is None or row[0] != doc["version"]:
                continue  # not landed yet: the version comparison reports it if it stays so
            cart_version, status, total, cart_doc = row
            # The columns are what the read API's queries filter on: they must agree with doc.
            assert (cart_version, status, str(total)) == (cart_doc["version"], cart_doc["status"],
                                                          cart_doc["totalPrice"]), cid
            assert cart_doc == {k: v for k, v in doc.items() if k != "customer"}, cid
        return out

    def api_doc(self, customer: str) -> dict[str, Any] | None:
        """The normalised GET /api/v1/<customerId> answer (None on 404)."""
        resp = self.http.get(f"{self.system.read_url}/api/v1/{customer}", timeout=HTTP_TIMEOUT_S)
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, (customer, resp.status_code, resp.text)
        return normalise(resp.json())

    def wait_for_versions(self, expected: dict[str, dict[str, Any]],
                          timeout_s: float = CONVERGE_TIMEOUT_S) -> None:
        """Wait (bounded) until Redis and PostgreSQL hold every expected customer's version."""
        customers = sorted(expected)
        deadline = time.monotonic() + timeout_s
        while True:
            self.system.assert_alive()
            r = self.redis_docs(customers)
            p = self.pg_docs()
            want = {c: expected[c]["customer"]["version"] for c in customers}
            behind = [c for c in customers
                      if ((r[c] or {}).get("customer") or {}).get("version") != want[c]
                      or (p.get(c, {}).get("customer") or {}).get("version") != want[c]]
            if not behind or time.monotonic() > deadline:
                return  # the caller's comparison reports whatever is still wrong
            time.sleep(0.5)

    def close(self) -> None:
        """Release the connections."""
        self.redis.close()
        self.http.close()


def diff(name: str, expected: dict[str, dict[str, Any]],
         got: dict[str, dict[str, Any] | None]) -> list[str]:
    """Human-readable mismatches between expected and stored carts (the first few fields)."""
    bad = [c for c in sorted(expected) if got.get(c) != expected[c]]
    out = []
    for c in bad[:3]:
        doc = got.get(c)
        fields = {k: (None if doc is None else doc.get(k), v) for k, v in expected[c].items()
                  if doc is None or doc.get(k) != v}
        out.append(f"{name} {c} (got, expected): {fields}")
    return out + ([f"{name}: {len(bad)} of {len(expected)} customers differ"] if bad else [])


def check_system(system: System, catalog: dict[str, Product], acks: list[dict[str, Any]],
                 timeout_s: float = CONVERGE_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """The whole check: acked exactly once, and Redis, PostgreSQL, read API == fold of the log.

    Call it once the workload has stopped. Returns the expected carts by customer.
    """
    records = read_topic(system.env["KAFKA_BOOTSTRAP"], system.env["TOPIC_CART_EVENTS"])
    check_acked_exactly_once(acks, records)
    expected = expected_with_stock(system, cart_events(records), catalog)
    models = ReadModels(system)
    try:
        models.wait_for_versions(expected, timeout_s)
        customers = sorted(expected)
        api = {c: models.api_doc(c) for c in customers}
        problems = (diff("redis", expected, models.redis_docs(customers))
                    + diff("postgres", expected, dict(models.pg_docs()))
                    + diff("read-api", expected, api))
    finally:
        models.close()
    assert not problems, "\n".join(problems)
    return expected


# ---------------------------------------------------------------------------------- workload


@dataclass
class Workload:
    """Random commands through the write API from a few threads; every answer is recorded.

    Statuses other than `allowed` (and request errors, e.g. a hang past the HTTP bound) are
    kept in `unexpected` for the test to assert on.
    """

    write_url: str
    customers: list[str]
    items: list[str]
    seed: int
    allowed: frozenset[int] = frozenset({202, 404})
    timeout_s: float = HTTP_TIMEOUT_S
    acks: list[dict[str, Any]] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    answers: list[tuple[float, int, dict[str, Any] | None, dict[str, str]]] = field(
        default_factory=list)
    # (sent, answered, status) of every request, monotonic seconds: when a request ran.
    spans: list[tuple[float, float, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _sent: int = 0

    def body(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        """One random command: (endpoint, JSON body)."""
        kind = rng.choices(["add", "remove", "checkout", "clear"], [55, 22, 14, 9])[0]
        body: dict[str, Any] = {"customerId": rng.choice(self.customers)}
        if kind in ("add", "remove"):
            body["itemId"] = rng.choice(self.items)
            if kind == "add" or rng.random() < 0.5:
                body["qty"] = rng.randint(1, 6)
        return kind, body

    def send(self, session: requests.Session, kind: str, body: dict[str, Any],
             headers: dict[str, str] | None = None) -> int:
        """POST one command and record the answer; returns the status (-1: no answer)."""
        sent = time.monotonic()
        try:
            resp = session.post(f"{self.write_url}/api/v1/{kind}", json=body, headers=headers,
                                timeout=self.timeout_s)
        except requests.RequestException as exc:
            with self._lock:
                self.statuses[-1] += 1
                self.spans.append((sent, time.monotonic(), -1))
                self.unexpected.append(f"{kind} {body}: {type(exc).__name__}: {exc}")
            return -1
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        status = resp.status_code
        code = (doc or {}).get("error", {}).get("code") if isinstance(doc, dict) else None
        expected = status in self.allowed and (
            (status == 202 and doc is not None and "eventId" in doc)
            or (status == 404 and code == "UNKNOWN_PRODUCT")
            or (status == 409 and code == "IDEMPOTENCY_KEY_IN_PROGRESS")
            or (status == 503 and code == "KAFKA_UNAVAILABLE"
                and int(resp.headers.get("Retry-After", "0")) >= 1))
        with self._lock:
            self.statuses[status] += 1
            answered = time.monotonic()
            self.answers.append((answered, status, doc, dict(resp.headers)))
            self.spans.append((sent, answered, status))
            if status == 202 and expected:
                self.acks.append(doc)
            if not expected:
                self.unexpected.append(f"{kind} {body}: {status} {resp.text[:300]}")
        if status == 503:
            time.sleep(0.3)  # a polite client waits before trying again (Retry-After)
        return status

    def run(self, n: int) -> None:
        """Send n commands from this thread."""
        rng = random.Random(f"{self.seed}-{self._sent}")
        self._sent += n
        with requests.Session() as s:
            for _ in range(n):
                self.send(s, *self.body(rng))

    def start(self, threads: int = 3, max_commands: int = 2000) -> None:
        """Keep sending from `threads` threads until stop() or max_commands in all."""
        self._stop.clear()
        per_thread = max_commands // threads

        def loop(i: int) -> None:
            rng = random.Random(f"{self.seed}-{self._sent}-{i}")
            with requests.Session() as s:
                for _ in range(per_thread):
                    if self._stop.is_set():
                        return
                    self.send(s, *self.body(rng))

        self._threads = [threading.Thread(target=loop, args=(i,), daemon=True)
                         for i in range(threads)]
        self._sent += max_commands
        for t in self._threads:
            t.start()

    def wait_done(self, timeout_s: float) -> None:
        """Wait (bounded) until the threads have sent all their commands."""
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), (
            f"the workload did not finish within {timeout_s}s: {self.statuses}")

    def stop(self) -> None:
        """Stop the threads and wait for them (bounded by the HTTP timeout)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 30)
            assert not t.is_alive(), "a workload thread hung"

    def count(self, status: int, since: float = 0.0) -> int:
        """How many answers had this status at or after `since` (monotonic time)."""
        with self._lock:
            return sum(1 for t, s, _, _ in self.answers if s == status and t >= since)

    def wait_for(self, status: int, n: int, since: float, timeout_s: float,
                 system: System | None = None) -> None:
        """Wait (bounded) until n answers with `status` came after `since`."""
        deadline = time.monotonic() + timeout_s
        while self.count(status, since) < n:
            if system is not None:
                system.assert_alive()
            assert time.monotonic() < deadline, (
                f"fewer than {n} x {status} within {timeout_s}s: {self.statuses}")
            time.sleep(0.05)

    def assert_clean(self) -> None:
        """No answer outside the allowed statuses, and something was acknowledged."""
        assert not self.unexpected, self.unexpected[:5]
        assert self.statuses[202] > 0, self.statuses


def high_watermarks(bootstrap: str, topic: str) -> int:
    """The sum of the topic's high watermarks (how many records it ever got)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-probe"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in parts)
    finally:
        c.close()
