"""Stock at checkout under kill -9: 50 customers, 3 units, exactly 3 orders, whatever the crash."""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed

import psycopg
import pytest
import requests

from tests.chaos.conftest import Chaos
from tests.e2e.test_system import console_produce, post, read_after, wait_for_products
from tests.support.reservations import model_of_topic

pytestmark = pytest.mark.e2e


def test_kill_9_of_the_aggregator_during_checkouts_still_gives_three_orders(
        chaos: Chaos, unique: str) -> None:
    rng = random.Random(unique)
    system = chaos.system
    pid = f"last{uuid.uuid4().hex[:6]}"
    console_produce(system, system.env["TOPIC_PRODUCTS"], [
        f'{pid}:{{"productId":"{pid}","productName":"Last three","price":"30.00",'
        f'"stockQty":3}}'])
    wait_for_products(system, [pid])
    s = requests.Session()
    customers = [f"stock-{unique}-{i}" for i in range(50)]
    for c in customers:
        read_after(s, system, c, post(s, system, "add", {"customerId": c, "itemId": pid,
                                                         "qty": 1}))

    def checkout(c: str) -> tuple[str, dict]:
        with requests.Session() as own:
            return c, post(own, system, "checkout", {"customerId": c})

    # All 50 checkouts at once; the aggregator is killed while it decides them, and again
    # after its restart (its snapshots are 1 s apart, so each resume re-reads and re-decides
    # requests whose answers it had already published).
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(checkout, c) for c in customers]
        for _ in as_completed(futures[:10]):
            pass
        for pause in (rng.uniform(0.0, 0.3), rng.uniform(0.5, 1.5)):
            time.sleep(pause)
            system.kill("aggregator")
            time.sleep(rng.uniform(0.0, 0.5))
            system.start("aggregator")
        acks = dict(f.result() for f in futures)

    carts = {c: read_after(s, system, c, acks[c]) for c in customers}
    orders = sorted(c for c, cart in carts.items() if cart["status"] == "CHECKED_OUT")
    assert len(orders) == 3, orders
    for c, cart in carts.items():
        if c not in orders:
            assert cart["status"] == "OPEN"
            assert [(r["reason"], r["itemIds"]) for r in cart["rejected"]] == [
                ("OUT_OF_STOCK", [pid])]

    # The ledger agrees: the request log, decided in order, gives these three and no one else;
    # the repeats a resume wrote changed nothing.
    model = model_of_topic(system.env["KAFKA_BOOTSTRAP"], system.env["TOPIC_CART_RESERVATIONS"])
    reserved = sorted(c for (c, _), a in model.answers.items()
                      if c in carts and a[0] == "RESERVED")
    assert reserved == orders and model.reserved[pid] == 3

    # Both stores hold three orders (an order published before a crash and re-decided the other
    # way after it would make four: the version guard keeps the first record of a version).
    deadline = time.monotonic() + 60
    while True:
        with psycopg.connect(system.env["DATABASE_URL"]) as conn:
            rows = conn.execute(
                "SELECT customer_id FROM carts WHERE status = 'CHECKED_OUT' "
                "AND customer_id = ANY(%s) ORDER BY customer_id", [customers]).fetchall()
            product = requests.get(f"{system.read_url}/api/v1/products/{pid}", timeout=10).json()
        if [r[0] for r in rows] == orders and product.get("reserved") == 3:
            break
        assert time.monotonic() < deadline, (rows, product)
        time.sleep(0.5)
    assert (product["stockQty"], product["available"]) == (3, 0)
    for c in orders:
        got = s.get(f"{system.read_url}/api/v1/{c}/orders", timeout=10).json()["items"]
        assert [o["status"] for o in got] == ["CHECKED_OUT"]
