"""Issue 15's cart rules through HTTP and real Kafka: one money range, expected versions (ETag /
If-Match), frozen orders, rejections that belong to their cart, no phantom carts."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import psycopg
import pytest
import requests

from cart_contract.limits import CART_TOTAL_MAX, LINE_QTY_MAX, LINES_MAX, PRICE_MAX
from tests.chaos.checks import dead_letters
from tests.e2e.test_system import console_produce, post, read_after, wait_for_products

pytestmark = pytest.mark.e2e


def _get(s: requests.Session, system, path: str) -> requests.Response:
    return s.get(f"{system.read_url}{path}", timeout=10)


def _stored(system, customer: str) -> tuple[dict | None, dict[str, dict]]:
    """The customer's PostgreSQL record and its cart rows (cartId -> doc)."""
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT doc FROM customers WHERE customer_id = %s",
                           (customer,)).fetchone()
        carts = dict(conn.execute("SELECT cart_id, doc FROM carts WHERE customer_id = %s",
                                  (customer,)).fetchall())
    return (row[0] if row else None), carts


def _wait_stored(system, customer: str, version: int) -> tuple[dict, dict[str, dict]]:
    deadline = time.monotonic() + 60
    while True:
        doc, carts = _stored(system, customer)
        if doc is not None and doc["customer"]["version"] >= version:
            return doc, carts
        assert time.monotonic() < deadline, f"{customer} never reached version {version}"
        time.sleep(0.3)


def _reasons(rejected: list[dict]) -> list[str]:
    return [r["reason"] for r in rejected]


def test_the_largest_cart_is_exact_in_both_stores_and_one_more_is_cart_limit(system) -> None:
    u = uuid.uuid4().hex[:6]
    ids = [f"gold-{u}-{i}" for i in range(LINES_MAX + 1)]
    console_produce(system, system.env["TOPIC_PRODUCTS"], [
        f'{pid}:{{"productId":"{pid}","productName":"Gold {i}","price":"1000000000.00",'
        f'"stockQty":1000000}}' for i, pid in enumerate(ids)])
    wait_for_products(system, ids)
    customer = f"rich-{u}"
    s = requests.Session()
    for pid in ids[:LINES_MAX]:
        post(s, system, "add", {"customerId": customer, "itemId": pid, "qty": LINE_QTY_MAX})
    over_lines = post(s, system, "add", {"customerId": customer, "itemId": ids[-1], "qty": 1})
    over_qty = post(s, system, "add", {"customerId": customer, "itemId": ids[0], "qty": 1})
    cart = read_after(s, system, customer, over_qty)
    assert _reasons(cart["rejected"]) == ["CART_LIMIT", "CART_LIMIT"]
    assert [r["eventId"] for r in cart["rejected"]] == [over_lines["eventId"],
                                                        over_qty["eventId"]]
    assert len(cart["lineItems"]) == LINES_MAX
    assert cart["totalPrice"] == f"{CART_TOTAL_MAX:.2f}" == "2000000000000000.00"
    for li in cart["lineItems"]:
        assert Decimal(li["totalPrice"]) == Decimal(li["unitPrice"]) * li["qty"]
    assert sum(Decimal(li["totalPrice"]) for li in cart["lineItems"]) == Decimal(
        cart["totalPrice"])

    # PostgreSQL holds the same version and totals exactly (columns, doc and lines).
    doc, carts = _wait_stored(system, customer, cart["customer"]["version"])
    assert (doc["customer"]["version"], doc["totalPrice"]) == (cart["customer"]["version"],
                                                               cart["totalPrice"])
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        total, version = conn.execute("SELECT total_price, version FROM carts WHERE cart_id = %s",
                                      (cart["cartId"],)).fetchone()
        lines_sum, n = conn.execute("SELECT sum(total_price), count(*) FROM cart_lines "
                                    "WHERE cart_id = %s", (cart["cartId"],)).fetchone()
    assert (total, lines_sum, n, version) == (CART_TOTAL_MAX, CART_TOTAL_MAX, LINES_MAX,
                                              cart["version"])
    assert carts[cart["cartId"]]["totalPrice"] == cart["totalPrice"]
    # The read API's amount filter takes such a total.
    found = _get(s, system, f"/api/v1/carts?minTotal={CART_TOTAL_MAX:.2f}").json()
    assert cart["cartId"] in [c["cartId"] for c in found["items"]]


def test_a_sub_cent_price_is_dead_lettered_and_the_product_stays(system) -> None:
    pid = f"cent-{uuid.uuid4().hex[:6]}"
    topic = system.env["TOPIC_PRODUCTS"]
    console_produce(system, topic, [
        f'{pid}:{{"productId":"{pid}","productName":"Cable","price":"5.00","stockQty":9}}'])
    wait_for_products(system, [pid])
    console_produce(system, topic, [
        f'{pid}:{{"productId":"{pid}","productName":"Cable","price":"19.999","stockQty":9}}',
        f'{pid}:{{"productId":"{pid}","productName":"Cable","price":"{PRICE_MAX + 1}",'
        '"stockQty":9}'])
    deadline = time.monotonic() + 60
    while True:
        letters = [d for d in dead_letters(system) if d.key == pid.encode()]
        seen = {(d.stage, d.offset) for d in letters}
        if len(seen) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # The catalog sink and the aggregator's product parse each refuse both records, saying why.
    assert {d.reason for d in letters} == {"INVALID_PRICE"}
    assert len(seen) == 4 and len({d.stage for d in letters}) == 2, seen
    assert "aggregator" in {d.stage for d in letters}
    assert any("2 decimals" in d.message for d in letters)
    s = requests.Session()
    assert _get(s, system, f"/api/v1/products/{pid}").json()["price"] == "5.00"
    customer = f"cent-{uuid.uuid4().hex[:6]}"
    ack = post(s, system, "add", {"customerId": customer, "itemId": pid, "qty": 3})
    cart = read_after(s, system, customer, ack)
    assert [(li["unitPrice"], li["totalPrice"]) for li in cart["lineItems"]] == [
        ("5.00", "15.00")]


def test_if_match_applies_a_command_only_on_the_version_it_was_decided_on(system) -> None:
    console_produce(system, system.env["TOPIC_PRODUCTS"], [
        '1:{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}'])
    wait_for_products(system, ["1"])
    customer = f"occ-{uuid.uuid4().hex[:6]}"
    s = requests.Session()
    # A new customer's version is 0.
    ack = post(s, system, "add", {"customerId": customer, "itemId": "1", "qty": 1},
               headers={"If-Match": '"0"'})
    cart = read_after(s, system, customer, ack)
    resp = _get(s, system, f"/api/v1/{customer}")
    assert resp.headers["ETag"] == f'"{cart["customer"]["version"]}"' == '"1"'
    etag = resp.headers["ETag"]
    # Another client changes the cart in between: the stale command is rejected.
    post(s, system, "add", {"customerId": customer, "itemId": "1", "qty": 1})
    stale = post(s, system, "checkout", {"customerId": customer}, headers={"If-Match": etag})
    cart = read_after(s, system, customer, stale)
    assert cart["status"] == "OPEN" and cart["lineItems"][0]["qty"] == 2
    assert cart["rejected"][-1] == {"eventId": stale["eventId"], "type": "CHECKOUT",
                                    "itemId": None, "reason": "VERSION_CONFLICT"}
    # Read again, decide again, write with the new ETag: applied.
    waited = s.get(f"{system.read_url}/api/v1/{customer}",
                   params={"minOffset": stale["readToken"]}, timeout=40)
    assert waited.headers["ETag"] == '"3"'
    done = post(s, system, "checkout", {"customerId": customer},
                headers={"If-Match": waited.headers["ETag"]})
    cart = read_after(s, system, customer, done)
    assert cart["status"] == "CHECKED_OUT" and cart["customer"]["version"] == 4
    # Without the header nothing changes; a malformed one is 400 and writes nothing.
    bad = s.post(f"{system.write_url}/api/v1/clear", json={"customerId": customer},
                 headers={"If-Match": "4"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_IF_MATCH"


def test_an_order_is_frozen_and_later_rejections_belong_to_the_customer(system) -> None:
    console_produce(system, system.env["TOPIC_PRODUCTS"], [
        '1:{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}'])
    wait_for_products(system, ["1"])
    customer = f"frz-{uuid.uuid4().hex[:6]}"
    s = requests.Session()
    post(s, system, "add", {"customerId": customer, "itemId": "1", "qty": 2})
    post(s, system, "remove", {"customerId": customer, "itemId": "9"})  # rejected, in the cart
    ack = post(s, system, "checkout", {"customerId": customer})
    read_after(s, system, customer, ack)
    _wait_stored(system, customer, 3)
    orders = _get(s, system, f"/api/v1/{customer}/orders").json()["items"]
    assert len(orders) == 1 and _reasons(orders[0]["rejected"]) == ["NOT_IN_CART"]
    _, rows = _stored(system, customer)

    post(s, system, "remove", {"customerId": customer, "itemId": "1"})
    post(s, system, "clear", {"customerId": customer})
    ack = post(s, system, "checkout", {"customerId": customer})
    cart = read_after(s, system, customer, ack)
    # The customer's GET: the order as it was, and what happened since under "customer".
    assert {k: v for k, v in cart.items() if k != "customer"} == orders[0]
    assert cart["customer"]["version"] == 6
    assert _reasons(cart["customer"]["rejected"]) == [
        "NOT_IN_CART", "NOT_IN_CART", "NO_OPEN_CART", "NO_OPEN_CART"]
    _wait_stored(system, customer, 6)
    assert _get(s, system, f"/api/v1/{customer}/orders").json()["items"] == orders
    assert _stored(system, customer)[1] == rows  # the order's row was never rewritten

    # The next cart starts without the earlier rejections.
    ack = post(s, system, "add", {"customerId": customer, "itemId": "1", "qty": 1})
    cart = read_after(s, system, customer, ack)
    assert cart["cartId"] == f"{customer}:2" and cart["rejected"] == []
    assert cart["version"] == cart["customer"]["version"] == 7


def test_a_customer_with_only_rejections_has_no_cart_but_its_get_explains(system) -> None:
    customer = f"nope-{uuid.uuid4().hex[:6]}"
    s = requests.Session()
    post(s, system, "checkout", {"customerId": customer})
    ack = post(s, system, "remove", {"customerId": customer, "itemId": "1"})
    cart = read_after(s, system, customer, ack)
    assert _reasons(cart["rejected"]) == ["NO_OPEN_CART", "NOT_IN_CART"]
    assert cart["lineItems"] == [] and cart["cartId"] == f"{customer}:0"
    doc, carts = _wait_stored(system, customer, 2)
    assert carts == {} and _reasons(doc["customer"]["rejected"]) == [
        "NO_OPEN_CART", "NOT_IN_CART"]
    found = _get(s, system, "/api/v1/carts?status=OPEN&maxTotal=0&limit=100").json()
    assert all(c["customerId"] != customer for c in found["items"])
    assert _get(s, system, f"/api/v1/{customer}/orders").json()["items"] == []
