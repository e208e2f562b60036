"""Read API against real Redis and PostgreSQL (a fresh database per test, random customer ids)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from cart_contract import (
    CHECKED_OUT,
    OPEN,
    CartDetails,
    EventPosition,
    LineItem,
    cart_details_to_dict,
    decode_cart_details,
    encode_cart_details,
    money,
)
from cart_contract.layout import UPDATES_CHANNEL, cart_key
from cart_read import queries
from cart_read.app import create_app
from cart_read.config import Config
from connectors.migrate import migrate
from tests.support.ports import free_port
from tests.support.read_client import ReadClient

pytestmark = pytest.mark.integration

def create_schema(url: str) -> None:
    """The connectors' schema (their versioned migrations) in the database at url."""
    with psycopg.connect(url, autocommit=True) as conn:
        assert migrate(conn)  # a fresh database: at least one migration applies


@pytest.fixture
def read_db(database_url: str, unique: str) -> Iterator[str]:
    name = f"read_test_{unique}"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(database_url, dbname=name)
    try:
        create_schema(url)
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                          .format(sql.Identifier(name)))


@pytest.fixture
def rds(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    yield r
    r.close()


@pytest.fixture
def make_app(redis_url: str, read_db: str) -> Iterator[Callable[..., ReadClient]]:
    """A client of a fresh app (its lifespan runs: subscribed; stores closed at the end)."""
    clients: list[ReadClient] = []

    def make(**overrides: Any) -> ReadClient:
        settings = {"redis_url": redis_url, "database_url": read_db, "page_max": 100, **overrides}
        clients.append(ReadClient(create_app(Config(**settings))))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def ctx_of(client: ReadClient) -> Any:
    return client.app.state.cart_read


# ------------------------------------------------------------------------------ seeding


def make_cart(customer: str, gen: int, *, status: str = OPEN, version: int | None = None,
              offset: int | None = None, lines: tuple[tuple[str, int, str], ...] = (("1", 1,
              "65000"),)) -> CartDetails:
    items = tuple(LineItem(i, f"item {i}", q, Decimal(p), money(Decimal(p) * q))
                  for i, q, p in lines)
    version = gen * 10 if version is None else version
    return CartDetails(
        customer, f"{customer}:{gen}", status, items, sum(li.qty for li in items),
        money(sum((li.total_price for li in items), Decimal(0))), version,
        EventPosition(f"ev-{customer}-{version}", 1, version if offset is None else offset), (),
        "2025-01-01T00:00:00.000000Z",
    )


def pg_put(url: str, c: CartDetails) -> None:
    """Upsert a cart the way the PostgreSQL sink lays it out."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO carts VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT (cart_id) DO UPDATE SET status=EXCLUDED.status,"
            " total_qty=EXCLUDED.total_qty, total_price=EXCLUDED.total_price,"
            " version=EXCLUDED.version, last_partition=EXCLUDED.last_partition,"
            " last_offset=EXCLUDED.last_offset, last_event_id=EXCLUDED.last_event_id,"
            " updated_at=EXCLUDED.updated_at, doc=EXCLUDED.doc",
            [c.cart_id, c.customer_id, c.generation, c.status, c.total_qty, c.total_price,
             c.version, c.last_event.partition, c.last_event.offset, c.last_event.event_id,
             c.updated_at, Jsonb(cart_details_to_dict(c))],
        )
        # The customer's current record, as the sink keeps it (newest customer version wins).
        conn.execute(
            "INSERT INTO customers VALUES (%s,%s,%s,%s,%s) ON CONFLICT (customer_id) DO UPDATE"
            " SET version=EXCLUDED.version, last_partition=EXCLUDED.last_partition,"
            " last_offset=EXCLUDED.last_offset, doc=EXCLUDED.doc"
            " WHERE customers.version < EXCLUDED.version",
            [c.customer_id, c.customer_version, c.customer_event.partition,
             c.customer_event.offset, Jsonb(cart_details_to_dict(c))],
        )
        conn.execute("DELETE FROM cart_lines WHERE cart_id = %s", [c.cart_id])
        for pos, li in enumerate(c.line_items):
            conn.execute("INSERT INTO cart_lines VALUES (%s,%s,%s,%s,%s,%s,%s)",
                         [c.cart_id, li.item_id, pos, li.item_name, li.qty, li.unit_price,
                          li.total_price])


def redis_put(r: redis.Redis, c: CartDetails) -> bytes:
    doc = encode_cart_details(c)
    r.hset(f"cart:{c.customer_id}", mapping={"v": c.version, "doc": doc})
    return doc


def product_put(url: str, pid: str, name: str, price: str, stock: int, deleted: bool = False,
                ) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO products VALUES (%s,%s,%s,%s,%s,%s,now())",
                     [pid, name, Decimal(price), stock, deleted, 1])


# -------------------------------------------------------------------------------- carts


def test_cart_from_redis(make_app, rds, unique) -> None:
    cid = f"c-{unique}"
    doc = redis_put(rds, make_cart(cid, 1))
    resp = make_app().get(f"/api/v1/{cid}")
    assert resp.status_code == 200 and resp.content == doc


def test_missing_redis_key_falls_back_to_postgres_and_rewarms(make_app, read_db, rds,
                                                              unique) -> None:
    cid = f"c-{unique}"
    old = make_cart(cid, 1, status=CHECKED_OUT, lines=(("7", 2, "10.50"),))
    current = make_cart(cid, 2, lines=(("1", 3, "65000"),))
    pg_put(read_db, old)
    pg_put(read_db, current)
    resp = make_app().get(f"/api/v1/{cid}")
    assert resp.status_code == 200
    assert orjson.loads(resp.content) == cart_details_to_dict(current)  # highest generation
    stored = rds.hgetall(cart_key(cid))
    assert stored[b"v"] == str(current.version).encode()
    assert decode_cart_details(stored[b"doc"]) == current


def test_last_checked_out_cart_when_none_is_open(make_app, read_db, rds, unique) -> None:
    cid = f"c-{unique}"
    done = make_cart(cid, 3, status=CHECKED_OUT)
    pg_put(read_db, make_cart(cid, 2, status=CHECKED_OUT))
    pg_put(read_db, done)
    resp = make_app().get(f"/api/v1/{cid}")
    assert resp.json()["cartId"] == f"{cid}:3" and resp.json()["status"] == CHECKED_OUT


def test_rewarm_is_version_guarded(make_app, rds, unique) -> None:
    cid = f"c-{unique}"
    newer_doc = redis_put(rds, make_cart(cid, 2, version=20))
    client = make_app()
    stores = ctx_of(client).stores
    key = cart_key(cid)
    assert not client.call(queries.rewarm, stores, make_cart(cid, 1, version=19))
    assert not client.call(queries.rewarm, stores, make_cart(cid, 9, version=20))
    assert rds.hget(key, "doc") == newer_doc
    newest = make_cart(cid, 3, version=21)
    assert client.call(queries.rewarm, stores, newest)
    assert rds.hmget(key, "v", "doc") == [b"21", encode_cart_details(newest)]


def test_a_killed_redis_connection_is_replaced(make_app, rds, unique) -> None:
    cid = f"c-{unique}"
    doc = redis_put(rds, make_cart(cid, 1))
    client = make_app()
    assert client.get(f"/api/v1/{cid}").content == doc
    # Kill the app's pooled connection (only it: other processes share this Redis).
    stores = ctx_of(client).stores
    assert rds.client_kill_filter(_id=client.call(stores.redis.client_id)) == 1
    # The database is empty: only Redis can answer, and the breaker must stay closed.
    assert client.get(f"/api/v1/{cid}").content == doc
    assert stores.redis_usable()


def test_redis_down_falls_back_to_postgres(make_app, read_db, unique) -> None:
    cid = f"c-{unique}"
    c = make_cart(cid, 1)
    pg_put(read_db, c)
    client = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    resp = client.get(f"/api/v1/{cid}")
    assert resp.status_code == 200 and orjson.loads(resp.content) == cart_details_to_dict(c)
    assert client.get(f"/api/v1/{cid}").status_code == 200  # again, breaker open
    assert client.get(f"/api/v1/x{unique}").status_code == 404


def test_unknown_customer_is_404(make_app, unique) -> None:
    resp = make_app().get(f"/api/v1/nobody-{unique}")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "NOT_FOUND"


def test_readyz(make_app) -> None:
    assert make_app().get("/readyz").status_code == 200
    down = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    resp = down.get("/readyz")
    assert resp.status_code == 503 and resp.json()["checks"]["postgres"] == "ok"


# ------------------------------------------------------------------------ read your write


def _request_in_thread(client: Any, url: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        result["resp"] = client.get(url)

    t = threading.Thread(target=run)
    t.start()
    return t, result


def _until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_read_your_write_wakes_on_the_notification(make_app, rds, unique) -> None:
    cid = f"c-{unique}"
    redis_put(rds, make_cart(cid, 1, version=5, offset=100))
    # A poll interval longer than the test: only a notification can end the wait with 200.
    app = make_app(degraded_poll_ms=120_000, wait_max_ms=120_000)
    waiters = ctx_of(app).waiters
    t, result = _request_in_thread(app,
                                   f"/api/v1/{cid}?minOffset=102&timeout=120000")
    _until(lambda: len(waiters) == 1 and waiters.connected)
    time.sleep(0.2)
    # Not yet the awaited offset: a notification for it must not answer the request.
    redis_put(rds, make_cart(cid, 1, version=6, offset=101))
    rds.publish(UPDATES_CHANNEL,
                orjson.dumps({"customerId": cid, "version": 6, "partition": 1, "offset": 101}))
    newer = make_cart(cid, 1, version=7, offset=102)
    redis_put(rds, newer)
    rds.publish(UPDATES_CHANNEL,
                orjson.dumps({"customerId": cid, "version": 7, "partition": 1, "offset": 102}))
    t.join(30)
    assert not t.is_alive()
    resp = result["resp"]
    assert resp.status_code == 200
    assert resp.json()["version"] == 7 and resp.json()["lastEvent"]["offset"] == 102
    assert len(waiters) == 0


def test_read_your_write_times_out_with_504(make_app, rds, unique) -> None:
    cid = f"c-{unique}"
    redis_put(rds, make_cart(cid, 1, version=5, offset=100))
    app = make_app()
    resp = app.get(f"/api/v1/{cid}?minOffset=101&timeout=300")
    assert resp.status_code == 504
    body = resp.json()
    assert body["error"]["code"] == "TIMEOUT"
    assert body["version"] == 5 and body["lastOffset"] == 100 and body["cart"]["version"] == 5
    assert len(ctx_of(app).waiters) == 0


def test_read_your_write_polls_postgres_while_redis_is_down(make_app, read_db, unique) -> None:
    cid = f"c-{unique}"
    pg_put(read_db, make_cart(cid, 1, version=5, offset=100))
    app = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0", degraded_poll_ms=20,
                   wait_max_ms=120_000)
    waiters = ctx_of(app).waiters
    t, result = _request_in_thread(app,
                                   f"/api/v1/{cid}?minOffset=101&timeout=120000")
    _until(lambda: len(waiters) == 1)
    pg_put(read_db, make_cart(cid, 1, version=6, offset=101))
    t.join(30)
    assert not t.is_alive()
    assert result["resp"].status_code == 200 and result["resp"].json()["version"] == 6


# -------------------------------------------------------------------------------- orders


def test_orders_newest_first_across_pages(make_app, read_db, unique) -> None:
    cid = f"c-{unique}"
    for gen in range(1, 6):
        pg_put(read_db, make_cart(cid, gen, status=CHECKED_OUT))
    pg_put(read_db, make_cart(cid, 6))  # open: not an order
    pg_put(read_db, make_cart(f"other-{unique}", 1, status=CHECKED_OUT))
    client = make_app()
    seen, cursor, pages = [], None, 0
    while True:
        url = f"/api/v1/{cid}/orders?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url).json()
        seen.extend(d["cartId"] for d in body["items"])
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"{cid}:{g}" for g in (5, 4, 3, 2, 1)]
    assert pages == 3
    empty = client.get(f"/api/v1/nobody-{unique}/orders").json()
    assert empty == {"items": [], "nextCursor": None}


# --------------------------------------------------------------------------------- carts


@pytest.fixture
def cart_set(read_db, unique) -> list[CartDetails]:
    """A spread of carts: both statuses, tied totals, shared items."""
    carts = []
    specs = [
        (OPEN, (("a", 1, "10.00"),)),
        (OPEN, (("a", 2, "10.00"), ("b", 1, "5.00"))),
        (CHECKED_OUT, (("b", 4, "5.00"),)),
        (CHECKED_OUT, (("c", 1, "99.99"),)),
        (OPEN, (("c", 1, "20.00"),)),
        (OPEN, (("a", 1, "20.00"),)),
        (CHECKED_OUT, (("a", 3, "10.00"), ("c", 1, "0.01"))),
        (OPEN, (("d", 1, "1000.00"),)),
        (CHECKED_OUT, (("b", 2, "10.00"),)),
        (OPEN, (("b", 1, "20.00"),)),
        (OPEN, (("e", 1, "0.50"),)),
    ]
    for i, (status, lines) in enumerate(specs):
        c = make_cart(f"q{unique}{i:03d}", 1, status=status, lines=lines)
        pg_put(read_db, c)
        carts.append(c)
    return carts


def _walk(client: Any, query: str, limit: int) -> tuple[list[str], int]:
    seen, cursor, pages = [], None, 0
    while True:
        url = f"/api/v1/carts?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        resp = client.get(url)
        assert resp.status_code == 200, resp.json()
        body = resp.json()
        seen.extend(d["cartId"] for d in body["items"])
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            return seen, pages


def _has(c: CartDetails, item: str) -> bool:
    return any(li.item_id == item for li in c.line_items)


@pytest.mark.parametrize(
    ("query", "keep", "by_total"),
    [
        ("sort=cartId", lambda c: True, False),
        ("status=OPEN", lambda c: c.status == OPEN, False),
        ("status=CHECKED_OUT", lambda c: c.status == CHECKED_OUT, False),
        ("minTotal=20", lambda c: c.total_price >= 20, True),
        ("maxTotal=20.00", lambda c: c.total_price <= 20, True),
        ("minTotal=10&maxTotal=30.01", lambda c: 10 <= c.total_price <= Decimal("30.01"), True),
        ("itemId=a", lambda c: _has(c, "a"), False),
        ("itemId=a&sort=totalPrice", lambda c: _has(c, "a"), True),
        ("status=OPEN&itemId=b&minTotal=1",
         lambda c: c.status == OPEN and _has(c, "b") and c.total_price >= 1, True),
        ("itemId=zzz", lambda c: False, False),
    ],
)
@pytest.mark.parametrize("limit", [1, 3, 100])
def test_carts_queries_page_without_gaps_or_duplicates(make_app, cart_set, query, keep,
                                                       by_total, limit) -> None:
    seen, pages = _walk(make_app(), query, limit)
    wanted = [c for c in cart_set if keep(c)]
    key = (lambda c: (c.total_price, c.cart_id)) if by_total else (lambda c: c.cart_id)
    assert seen == [c.cart_id for c in sorted(wanted, key=key)]
    assert pages == max(1, -(-len(wanted) // limit))


def test_carts_query_answers_the_cart_documents(make_app, cart_set) -> None:
    target = cart_set[7]
    body = make_app().get("/api/v1/carts?minTotal=1000").json()
    assert body["items"] == [cart_details_to_dict(target)]


# ------------------------------------------------------------------------------ products


def test_products_listing_excludes_deleted_and_pages(make_app, read_db) -> None:
    for i in range(7):
        product_put(read_db, f"p{i:02d}", f"Product {i}", f"{i}99.5", i, deleted=(i == 3))
    client = make_app()
    seen, cursor = [], None
    while True:
        body = client.get("/api/v1/products?limit=2" + (f"&cursor={cursor}" if cursor else "")
                          ).json()
        seen.extend(body["items"])
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert [p["productId"] for p in seen] == ["p00", "p01", "p02", "p04", "p05", "p06"]
    assert seen[1] == {"productId": "p01", "productName": "Product 1", "price": "199.50",
                       "stockQty": 1, "schemaVersion": 1, "reserved": 0, "available": 1}
    assert client.get("/api/v1/products/p05").json()["price"] == "599.50"
    # Units reserved by checkouts (the reservations sink's table) show beside the warehouse
    # count; available never goes below 0.
    with psycopg.connect(read_db, autocommit=True) as conn:
        conn.execute("INSERT INTO product_reservations VALUES ('p05', 2, 7), ('p02', 9, 8)")
    p05 = client.get("/api/v1/products/p05").json()
    assert (p05["stockQty"], p05["reserved"], p05["available"]) == (5, 2, 3)
    assert client.get("/api/v1/products/p02").json()["available"] == 0
    assert client.get("/api/v1/products/p03").status_code == 404
    assert client.get("/api/v1/products/nope").status_code == 404
