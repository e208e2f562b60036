"""Issue 7's fault scenarios on one private system: every read model must equal the fold of the log.

Each test drives a random workload through the write API, injects its fault, lets the system
settle and runs `check_system` (acked exactly once; Redis, PostgreSQL and the read API equal the
fold of `cart-events` for every customer the log knows, this test's and the earlier ones').
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import redis
import requests

from cart_contract import EventType, decode_cart_event, encode_cart_event, new_cart_event
from tests.chaos.checks import (
    ReadModels,
    Record,
    Workload,
    cart_events,
    check_system,
    dead_letters,
    expected_carts,
    high_watermarks,
    produce,
    read_topic,
)
from tests.chaos.conftest import Chaos
from tests.support.connectors import committed, end_offsets
from tests.support.fold_model import reserved_as_added
from tests.support.reservations import model_of_topic

pytestmark = pytest.mark.e2e

UNKNOWN_ITEMS = ["998", "999"]  # refused with 404 while the catalog check runs, else rejected


def workload(chaos: Chaos, unique: str, scenario: str, customers: int = 60) -> Workload:
    """A workload over fresh customers of this scenario, all products plus two unknown ones."""
    ids = [f"{scenario}-{unique}-{i}" for i in range(customers)]
    return Workload(chaos.system.write_url, ids, [*chaos.catalog, *UNKNOWN_ITEMS],
                    seed=int(unique, 16))


def wait_for_output(chaos: Chaos, since: int, timeout_s: float = 60) -> None:
    """Wait (bounded) until the aggregator published records beyond `since`."""
    env = chaos.system.env
    deadline = time.monotonic() + timeout_s
    while high_watermarks(env["KAFKA_BOOTSTRAP"], env["TOPIC_CART_DETAILS"]) <= since:
        chaos.system.assert_alive()
        assert time.monotonic() < deadline, "the aggregator published nothing"
        time.sleep(0.1)


def test_aggregator_killed_at_random_moments(chaos: Chaos, unique: str) -> None:
    """Scenario 1: kill -9 the aggregator 3 times while writes flow; restart it each time."""
    rng = random.Random(unique)
    env = chaos.system.env
    wl = workload(chaos, unique, "agg")
    # Until stopped after the kills: a bounded workload could end before the last kill, and
    # then the restarted aggregator has nothing new to publish (wait_for_output fails).
    wl.start(threads=3, max_commands=10**7)
    kills = 0
    try:
        for _ in range(3):
            # A random moment while it is working: after it published something since its start.
            wait_for_output(chaos, high_watermarks(env["KAFKA_BOOTSTRAP"],
                                                   env["TOPIC_CART_DETAILS"]))
            time.sleep(rng.uniform(0.1, 1.5))
            chaos.system.kill("aggregator")
            kills += 1
            time.sleep(rng.uniform(0.0, 1.0))
            chaos.system.start("aggregator")
        time.sleep(rng.uniform(0.5, 1.5))
    finally:
        wl.stop()
    assert kills == 3
    wl.assert_clean()
    check_system(chaos.system, chaos.catalog, wl.acks)


def pg_sink_blocked(database_url: str) -> bool:
    """Whether a session waits on a lock inside the upsert into carts (the sink, mid-batch)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE '%INSERT INTO carts%'").fetchone()
    return bool(row and row[0])


def redis_sink_blocked(client: redis.Redis) -> bool:
    """Whether a client is held by CLIENT PAUSE in the middle of a cart script call."""
    return any("b" in c["flags"] and c["cmd"] in ("evalsha", "eval")
               for c in client.client_list())


def wait_until(check: Any, what: str, chaos: Chaos, timeout_s: float = 60) -> None:
    """Poll check() until true (bounded), failing early if a service died."""
    deadline = time.monotonic() + timeout_s
    while not check():
        chaos.system.assert_alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def kill_postgres_sink_mid_batch(chaos: Chaos) -> None:
    """Hold the carts table so the sink's batch transaction waits on its upsert, kill it there."""
    system = chaos.system
    # Staged, not yet merged, offsets not committed: the batch is half done.
    with psycopg.connect(system.env["DATABASE_URL"]) as locker:
        locker.execute("LOCK TABLE carts IN EXCLUSIVE MODE")
        wait_until(lambda: pg_sink_blocked(system.env["DATABASE_URL"]),
                   "the postgres sink to block mid-batch", chaos)
        system.kill("sink-postgres")
        locker.rollback()
    system.start("sink-postgres")


def kill_redis_sink_mid_batch(chaos: Chaos) -> None:
    """Pause Redis writes so the sink's pipelined CAS scripts wait, kill it there."""
    system = chaos.system
    client = redis.Redis.from_url(system.env["REDIS_URL"], socket_timeout=10)
    client.execute_command("CLIENT", "PAUSE", 30000, "WRITE")
    try:
        wait_until(lambda: redis_sink_blocked(client), "the redis sink to block mid-batch", chaos)
        system.kill("sink-redis")
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
        client.close()
    system.start("sink-redis")


def test_sinks_killed_mid_batch(chaos: Chaos, unique: str) -> None:
    """Scenario 2: kill -9 each sink while it is inside a batch's store write, then restart it.

    Both kills fall in one window: a restarted sink waits for the killed member's Kafka session
    to expire (45 s) before it gets its partitions back.
    """
    rng = random.Random(unique)
    wl = workload(chaos, unique, "sink")
    wl.start(threads=3, max_commands=3000)
    try:
        kills = [kill_postgres_sink_mid_batch, kill_redis_sink_mid_batch]
        rng.shuffle(kills)
        for kill in kills:
            time.sleep(rng.uniform(0.2, 1.5))
            kill(chaos)
        time.sleep(rng.uniform(0.5, 1.5))
    finally:
        wl.stop()
    wl.assert_clean()
    check_system(chaos.system, chaos.catalog, wl.acks)


def test_redis_restarted_empty(chaos: Chaos, unique: str) -> None:
    """Scenario 4: Redis comes back empty; reads fall back to PostgreSQL and refill Redis."""
    system = chaos.system
    wl = workload(chaos, unique, "redis")
    wl.run(300)
    expected = check_system(system, chaos.catalog, wl.acks)
    # Redis down: every read comes from PostgreSQL.
    chaos.redis.kill()
    models = ReadModels(system)
    try:
        sample = random.Random(unique).sample(sorted(expected), 30)
        for c in sample:
            assert models.api_doc(c) == expected[c], c
    finally:
        models.close()

    # Writes while Redis is down are accepted (the catalog check is skipped).
    outage = workload(chaos, unique, "redis-outage", customers=10)
    outage.run(60)
    outage.assert_clean()
    touched = {a["customerId"] for a in outage.acks}

    chaos.restart_redis_empty()
    models = ReadModels(system)
    try:
        # Customers nobody wrote to since are not in Redis until a read brings them back.
        untouched = sorted(set(expected) - touched)
        assert all(v is None for v in models.redis_docs(untouched).values())
        for c in untouched:
            assert models.api_doc(c) == expected[c], c
        # A reader that just saw Redis fail skips it for a moment, so refilling may take a
        # second read; bounded.
        deadline = time.monotonic() + 30
        while True:
            stored = models.redis_docs(untouched)
            missing = [c for c in untouched if stored[c] is None]
            if not missing or time.monotonic() > deadline:
                break
            for c in missing:
                assert models.api_doc(c) == expected[c], c
            time.sleep(0.3)
        assert not missing, f"{len(missing)} carts never came back into Redis: {missing[:5]}"
        assert all(stored[c] == expected[c] for c in untouched)
    finally:
        models.close()

    # And the system carries on with the new Redis.
    wl.run(150)
    check_system(system, chaos.catalog, [*wl.acks, *outage.acks])


def poison_cart_records(customer: str) -> tuple[list[tuple[bytes | None, bytes | None]],
                                                dict[int, str]]:
    """Good events of `customer` with poison between them; index -> expected dead-letter reason."""
    key = customer.encode()

    def good(kind: EventType, item: str | None = None, qty: int | None = None) -> bytes:
        return encode_cart_event(new_cart_event(kind, customer, item, qty))

    sample = good(EventType.ITEM_ADDED, "1", 1)
    records: list[tuple[bytes | None, bytes | None]] = [
        (key, good(EventType.ITEM_ADDED, "1", 2)),
        (key, b"{oops"),
        (key, None),
        (key, good(EventType.ITEM_ADDED, "2", 1)),
        (key, sample.replace(b'"ITEM_ADDED"', b'"TELEPORT"')),
        (key, sample.replace(b'"qty":1', b'"qty":0')),
        (key, sample.replace(b'"customerId":"' + key + b'",', b"")),
        (key + b"-other", good(EventType.ITEM_ADDED, "3", 1)),
        (key, b"[1,2]"),
        (key, good(EventType.ITEM_REMOVED, "1", 1)),
    ]
    reasons = {1: "INVALID_JSON", 2: "INVALID_JSON", 4: "UNKNOWN_EVENT_TYPE", 5: "INVALID_QTY",
               6: "MISSING_FIELD", 7: "KEY_MISMATCH", 8: "NOT_AN_OBJECT"}
    return records, reasons


POISON_PRODUCTS: list[tuple[bytes, bytes, str]] = [
    (b"3", b"{not json", "INVALID_JSON"),
    (b"4", b'{"productId":"4","productName":"Cheap","price":"-1","stockQty":1}', "INVALID_PRICE"),
    (b"5", b'{"productId":"6","productName":"Other","price":"1.00","stockQty":1}', "KEY_MISMATCH"),
    (b"7", b'{"productId":"7","productName":"X","price":"1.00","stockQty":"many"}', "WRONG_TYPE"),
    (b"bad key!", b'{"productId":"bad key!","productName":"X","price":"1","stockQty":1}',
     "INVALID_ID"),
]


def test_poison_records_go_to_the_dead_letter_topic(chaos: Chaos, unique: str) -> None:
    """Scenario 5: poison on both input topics is dead-lettered; good records around it count."""
    system = chaos.system
    env = system.env
    wl = workload(chaos, unique, "poison")
    wl.start(threads=2, max_commands=600)
    poison: dict[tuple[str, int, int], tuple[bytes | None, str, set[str]]] = {}
    poisoned_customers = [f"pc-{unique}-{i}" for i in range(3)]
    try:
        # Products that exist get broken updates: none may change the catalog the carts use.
        where = produce(env["KAFKA_BOOTSTRAP"], env["TOPIC_PRODUCTS"],
                        [(k, v) for k, v, _ in POISON_PRODUCTS])
        for (p, o), (_, value, reason) in zip(where, POISON_PRODUCTS, strict=True):
            poison[(env["TOPIC_PRODUCTS"], p, o)] = (value, reason, {"aggregator", "sink-catalog"})
        for c in poisoned_customers:
            records, reasons = poison_cart_records(c)
            where = produce(env["KAFKA_BOOTSTRAP"], env["TOPIC_CART_EVENTS"], records)
            for i, reason in reasons.items():
                p, o = where[i]
                poison[(env["TOPIC_CART_EVENTS"], p, o)] = (records[i][1], reason, {"aggregator"})
            time.sleep(0.3)
    finally:
        wl.stop()
    wl.assert_clean()
    expected = check_system(system, chaos.catalog, wl.acks)

    # The good records around the poison: add 1 x2, add 2 x1, remove 1 x1, nothing else.
    for c in poisoned_customers:
        assert expected[c]["customer"]["version"] == 3, expected[c]
        assert [(li[0], li[2]) for li in expected[c]["lineItems"]] == [("1", 1), ("2", 1)]

    deadline = time.monotonic() + 60
    while True:
        letters = dead_letters(system)
        found = {(d.source_topic, d.partition, d.offset, d.stage): d for d in letters}
        missing = [(k, stage) for k, (_, _, stages) in poison.items() for stage in stages
                   if (*k, stage) not in found]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, f"poison not dead-lettered: {missing[:5]}"
    for k, (value, reason, stages) in poison.items():
        for stage in stages:
            d = found[(*k, stage)]
            assert (d.reason, d.value) == (reason, value), (k, stage, d)
            assert d.message
    # Nothing else was refused: no good record, and no cart the aggregator published.
    refused = {(d.source_topic, d.partition, d.offset) for d in letters}
    assert refused == set(poison), refused - set(poison)
    # The catalog sink counted its dead letters by reason (at least once each: a re-read batch
    # dead-letters again), for the CartstreamDeadLetters alert.
    from prometheus_client.parser import text_string_to_metric_families

    want = Counter(reason for _, reason, stages in poison.values() if "sink-catalog" in stages)
    assert want
    page = requests.get(f"http://127.0.0.1:{env['SINK_CATALOG_METRICS_PORT']}/metrics",
                        timeout=5).text
    got = Counter({s.labels["reason"]: int(s.value)
                   for f in text_string_to_metric_families(page) for s in f.samples
                   if s.name == "cartstream_sink_dead_letters_total"})
    assert set(got) == set(want) and all(got[r] >= n for r, n in want.items()), (got, want)


def retry(wl: Workload, kind: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    """The same request again, on a connection of its own, as a client does: a 409 (the key's
    first request is still in flight) is retried after a pause."""
    with requests.Session() as s:
        for _ in range(50):
            status = wl.send(s, kind, body, headers)
            if status != 409:
                return status
            time.sleep(0.1)
        return status


def test_retries_and_replayed_output_have_no_double_effect(chaos: Chaos, unique: str) -> None:
    """Scenario 6: one Idempotency-Key retried, and the aggregator's output replayed."""
    system = chaos.system
    env = system.env
    rng = random.Random(unique)
    wl = workload(chaos, unique, "dup", customers=40)
    wl.allowed = wl.allowed | {409}  # IDEMPOTENCY_KEY_IN_PROGRESS, retried by `retry`
    keyed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with requests.Session() as s, ThreadPoolExecutor(2) as pool:
        for i in range(120):
            kind, body = wl.body(rng)
            if kind == "remove":  # removes of absent items change nothing: adds show doubling
                kind, body = "add", {**body, "qty": body.get("qty") or 1}
            key = f"retry-{unique}-{i}"
            headers = {"Idempotency-Key": key}
            first = len(wl.acks)
            wl.send(s, kind, body, headers)
            # A retry, sometimes two concurrent ones (a client that timed out, twice).
            tries = 2 if rng.random() < 0.3 else 1
            for f in [pool.submit(retry, wl, kind, body, headers) for _ in range(tries)]:
                f.result()
            keyed[key] = wl.acks[first:]
            if rng.random() < 0.5:
                wl.run(2)  # ordinary traffic in between
    wl.assert_clean()
    for key, acks in keyed.items():
        if acks:  # an add of an unknown product is refused every time (404)
            # Every retry is answered from the key's record: the first 202, to the byte.
            assert len(acks) >= 2 and all(a == acks[0] for a in acks), (key, acks)
    mine = set(wl.customers)
    logged = [r for r in read_topic(env["KAFKA_BOOTSTRAP"], env["TOPIC_CART_EVENTS"])
              if (r.key or b"").decode() in mine]
    ids = [decode_cart_event(r.value or b"").event_id for r in logged]
    assert len(ids) == len(set(ids)), "a retry with an Idempotency-Key reached the log"

    # The second line of defence: the keyed events again, straight into the log, as a retry
    # after its record expired (or Redis lost it) would append them, under the same eventId.
    keyed_ids = {acks[0]["eventId"] for acks in keyed.values() if acks}
    copies = [(r.key, r.value) for r in logged
              if decode_cart_event(r.value or b"").event_id in keyed_ids]
    for (_, value), (part, off) in zip(
            copies, produce(env["KAFKA_BOOTSTRAP"], env["TOPIC_CART_EVENTS"], copies,
                            partitioner="murmur2_random"),
            strict=True):
        wl.acks.append({"eventId": decode_cart_event(value or b"").event_id,
                        "partition": part, "offset": off})
    expected = check_system(system, chaos.catalog, wl.acks)

    # No double effect: the carts equal the fold of the log with every repeat dropped, while
    # applying the repeats as new events would have changed some of them.
    events = [e for e in cart_events(read_topic(env["KAFKA_BOOTSTRAP"], env["TOPIC_CART_EVENTS"]))
              if e[0].customer_id in set(wl.customers)]
    seen: set[str] = set()
    once, doubled = [], []
    for ev, pos in events:
        once += [] if ev.event_id in seen else [(ev, pos)]
        doubled.append((replace(ev, event_id=str(uuid.uuid4())) if ev.event_id in seen else ev,
                        pos))
        seen.add(ev.event_id)
    assert len(once) < len(events), "the copies did not reach the log"

    def content(doc: dict[str, Any]) -> tuple[Any, ...]:
        return doc["cartId"], doc["status"], doc["lineItems"], doc["totalQty"], doc["totalPrice"]

    # Checkouts as the reservation stage decided them (earlier scenarios of this system used
    # up stock); a checkout that never asked (a doubled copy) is reserved as added.
    decided = model_of_topic(env["KAFKA_BOOTSTRAP"], env["TOPIC_CART_RESERVATIONS"]).answers

    def checkout_at(ev: Any, state: Any) -> Any:
        return decided.get((ev.customer_id, ev.event_id)) or reserved_as_added(state)

    single = expected_carts(once, chaos.catalog, checkout_at=checkout_at)
    double = expected_carts(doubled, chaos.catalog, checkout_at=checkout_at)
    assert all(content(expected[c]) == content(single[c]) for c in single)
    assert any(content(double[c]) != content(single[c]) for c in single), "retries were no-ops"

    # Replay the aggregator's output for these customers, newest version first: a sink that
    # applied records without the version guard would end on each customer's oldest cart.
    details = read_topic(env["KAFKA_BOOTSTRAP"], env["TOPIC_CART_DETAILS"])
    mine = [r for r in details if (r.key or b"").decode() in set(wl.customers)]
    by_customer: dict[bytes | None, list[Record]] = defaultdict(list)
    for r in mine:
        by_customer[r.key].append(r)
    replay = [(r.key, r.value) for rs in by_customer.values() for r in reversed(rs)]
    assert sum(1 for rs in by_customer.values() if len(rs) > 1) > 0, "nothing older to replay"
    produce(env["KAFKA_BOOTSTRAP"], env["TOPIC_CART_DETAILS"], replay)
    until = end_offsets(env["KAFKA_BOOTSTRAP"], env["TOPIC_CART_DETAILS"])
    deadline = time.monotonic() + 60
    for sink in ("redis", "postgres"):
        group = f"{env['CONSUMER_GROUP_PREFIX']}-{sink}"
        while any(committed(env["KAFKA_BOOTSTRAP"], group, env["TOPIC_CART_DETAILS"]).get(p, -1)
                  < o for p, o in until.items() if o):
            system.assert_alive()
            assert time.monotonic() < deadline, f"the {sink} sink did not consume the replay"
            time.sleep(0.3)
    check_system(system, chaos.catalog, wl.acks)
