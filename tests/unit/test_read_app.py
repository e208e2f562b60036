"""Read API handlers over fake stores: status codes, error shapes, fallback decisions (no I/O)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from cart_contract import (
    cart_details_to_dict,
    encode_cart_details,
)
from cart_contract.layout import cart_key
from cart_read.app import create_app
from cart_read.config import Config
from cart_read.params import KIND_ORDERS, encode_cursor
from cart_read.waiters import CartWaiters
from tests.support.read_client import ReadClient, mimetype
from tests.support.read_fakes import FakePool, FakeRedis, NoDb, cart

CFG = Config(redis_retry_ms=0)


def client(r: Any = None, pool: Any = None, waiter: CartWaiters | None = None,
           cfg=CFG) -> ReadClient:
    app = create_app(cfg, redis=r or FakeRedis(), db_pool=pool or NoDb(),
                     waiter=waiter or CartWaiters(4))
    return ReadClient(app)


def assert_error(resp: Any, status: int, code: str, field: str | None = None) -> dict:
    assert resp.status_code == status
    assert mimetype(resp) == "application/json"
    body = resp.json()
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert body["error"]["field"] == field
    assert body["error"]["message"]
    return body


# ------------------------------------------------------------------------- generic errors


def test_unknown_path_is_json_404() -> None:
    assert_error(client().get("/nope"), 404, "NOT_FOUND")
    assert_error(client().get("/api/v1/123/orders/x"), 404, "NOT_FOUND")


def test_wrong_method_is_json_405_with_allow() -> None:
    resp = client().post("/api/v1/123")
    assert_error(resp, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in resp.headers["Allow"]
    assert_error(client().delete("/api/v1/carts"), 405, "METHOD_NOT_ALLOWED")


def test_healthz_does_no_io() -> None:
    resp = client(FakeRedis(down=True)).get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


def test_readyz_reports_each_store() -> None:
    ok = client(FakeRedis(), FakePool([(1,)])).get("/readyz")
    assert ok.status_code == 200
    assert ok.json()["checks"] == {"redis": "ok", "postgres": "ok"}
    import psycopg

    bad = client(FakeRedis(down=True), FakePool(error=psycopg.OperationalError("down")))
    body = assert_error(bad.get("/readyz"), 503, "NOT_READY")
    assert body["checks"]["redis"].startswith("redis:")
    assert body["checks"]["postgres"].startswith("postgresql:")


# ---------------------------------------------------------------------------------- carts


def test_cart_comes_from_redis_byte_for_byte() -> None:
    r = FakeRedis()
    doc = r.put(cart())
    resp = client(r).get("/api/v1/123")
    assert resp.status_code == 200 and mimetype(resp) == "application/json"
    assert resp.content == doc


def test_bad_customer_id_and_parameters_are_400() -> None:
    c = client()
    assert_error(c.get("/api/v1/a%20b"), 400, "INVALID_ID", "customerId")
    assert_error(c.get("/api/v1/123?minOffset=-1"), 400, "INVALID_PARAMETER", "minOffset")
    assert_error(c.get("/api/v1/123?timeout=10"), 400, "INVALID_PARAMETER", "timeout")
    assert_error(c.get("/api/v1/123?x=1"), 400, "UNKNOWN_PARAMETER", "x")


def test_redis_miss_reads_postgres_and_rewarms() -> None:
    r = FakeRedis()
    c = cart(version=5)
    pool = FakePool([(5, orjson.loads(encode_cart_details(c)))])
    resp = client(r, pool).get("/api/v1/123")
    assert resp.status_code == 200
    assert orjson.loads(resp.content) == cart_details_to_dict(c)
    assert pool.queries[0][1] == ["123"]
    assert r.hashes[cart_key("123")] == {"v": b"5", "doc": encode_cart_details(c)}


def test_redis_down_reads_postgres_without_rewarm() -> None:
    r = FakeRedis(down=True)
    c = cart(version=5)
    pool = FakePool([(5, cart_details_to_dict(c))])
    resp = client(r, pool).get("/api/v1/123")
    assert resp.status_code == 200
    assert orjson.loads(resp.content) == cart_details_to_dict(c)
    assert r.evals == []


def test_rewarm_never_replaces_a_newer_cart() -> None:
    r = FakeRedis()
    r.hashes[cart_key("123")] = {"v": b"9"}  # a newer version's guard, doc not readable
    pool = FakePool([(5, cart_details_to_dict(cart(version=5)))])
    assert client(r, pool).get("/api/v1/123").status_code == 200
    assert r.evals and r.hashes[cart_key("123")] == {"v": b"9"}


def test_a_doc_the_contract_refuses_is_served_but_not_rewarmed() -> None:
    r = FakeRedis()
    pool = FakePool([(5, {"customerId": "123", "odd": True})])
    resp = client(r, pool).get("/api/v1/123")
    assert resp.status_code == 200 and resp.json()["odd"] is True
    assert r.evals == []


def test_unknown_customer_is_404() -> None:
    assert_error(client(FakeRedis(), FakePool([])).get("/api/v1/999"), 404, "NOT_FOUND",
                 "customerId")


def test_both_stores_down_is_503_with_retry_after() -> None:
    import psycopg

    pool = FakePool(error=psycopg.OperationalError("connection refused"))
    resp = client(FakeRedis(down=True), pool).get("/api/v1/123")
    assert_error(resp, 503, "STORE_UNAVAILABLE")
    assert resp.headers["Retry-After"] == "1"


def test_min_offset_already_reached_answers_at_once() -> None:
    r = FakeRedis()
    doc = r.put(cart(offset=10))
    resp = client(r, waiter=CartWaiters(0)).get("/api/v1/123?minOffset=10&timeout=1")
    assert resp.status_code == 200 and resp.content == doc


def test_min_offset_timeout_is_504_with_the_version_it_has() -> None:
    r = FakeRedis()
    r.put(cart(version=3, offset=10))
    resp = client(r).get("/api/v1/123?minOffset=11&timeout=20")
    body = assert_error(resp, 504, "TIMEOUT", "minOffset")
    assert body["version"] == 3 and body["lastOffset"] == 10
    assert body["cart"]["version"] == 3


def test_min_offset_timeout_for_an_unknown_customer() -> None:
    body = assert_error(client(FakeRedis(), FakePool()).get("/api/v1/9?minOffset=0&timeout=0"),
                        504, "TIMEOUT", "minOffset")
    assert body["version"] is None and body["cart"] is None


def test_too_many_waiters_is_503_with_retry_after() -> None:
    r = FakeRedis()
    r.put(cart(offset=1))
    waiters = CartWaiters(1)
    with waiters.waiting("someone", 1):
        resp = client(r, waiter=waiters).get("/api/v1/123?minOffset=2&timeout=10")
    assert_error(resp, 503, "TOO_MANY_WAITERS", "minOffset")
    assert resp.headers["Retry-After"] == "1"


# ------------------------------------------------------------------------ static routes win


def test_carts_and_products_are_not_customer_ids() -> None:
    carts = client(FakeRedis(), FakePool([])).get("/api/v1/carts")
    assert carts.status_code == 200 and carts.json() == {"items": [], "nextCursor": None}
    products = client(FakeRedis(), FakePool([])).get("/api/v1/products")
    assert products.json() == {"items": [], "nextCursor": None}


# --------------------------------------------------------------------------------- listings


def test_orders_page_and_cursor() -> None:
    docs = [(g, {"cartId": f"123:{g}"}) for g in (5, 4, 3)]
    pool = FakePool(docs)
    resp = client(FakeRedis(), pool).get("/api/v1/123/orders?limit=2")
    body = resp.json()
    assert [d["cartId"] for d in body["items"]] == ["123:5", "123:4"]
    assert body["nextCursor"] == encode_cursor(KIND_ORDERS, 4)
    assert pool.queries[0][1] == ["123", "CHECKED_OUT", 3]  # limit + 1 rows asked for


def test_listing_parameters_are_checked_before_any_query() -> None:
    c = client()
    assert_error(c.get("/api/v1/123/orders?cursor=zz"), 400, "INVALID_CURSOR", "cursor")
    assert_error(c.get("/api/v1/carts?status=NEW"), 400, "INVALID_PARAMETER", "status")
    assert_error(c.get("/api/v1/carts?minTotal=abc"), 400, "INVALID_PARAMETER", "minTotal")
    assert_error(c.get("/api/v1/products?limit=0"), 400, "INVALID_PARAMETER", "limit")
    assert_error(c.get("/api/v1/products/a%2Fb"), 404, "NOT_FOUND")  # %2F is a path separator
    assert_error(c.get("/api/v1/products/a%20b"), 400, "INVALID_ID", "productId")


def test_carts_query_values_are_parameters_not_sql() -> None:
    pool = FakePool([])
    resp = client(FakeRedis(), pool).get(
        "/api/v1/carts?status=OPEN&minTotal=1.5&maxTotal=2&itemId=item-77&limit=5")
    assert resp.status_code == 200
    query, params = pool.queries[0]
    assert params == ["OPEN", Decimal("1.5"), Decimal("2"), "item-77", 6]
    text = query.as_string(None)
    assert text.count("%s") == len(params)
    assert "item-77" not in text and "1.5" not in text and "OPEN" not in text


def test_product_found_and_not_found() -> None:
    pool = FakePool([("1", "IPhone 12", Decimal("65000.00"), 768, 5)], [])
    c = client(FakeRedis(), pool)
    resp = c.get("/api/v1/products/1")
    assert resp.status_code == 200
    assert resp.json() == {"productId": "1", "productName": "IPhone 12", "price": "65000.00",
                               "stockQty": 768, "schemaVersion": 1, "reserved": 5,
                               "available": 763}
    assert_error(c.get("/api/v1/products/2"), 404, "NOT_FOUND", "productId")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/api/v1/products/1"])
def test_fixed_endpoints_refuse_unknown_parameters(path: str) -> None:
    resp = client(FakeRedis(), FakePool([(1,)])).get(path + "?x=1")
    assert_error(resp, 400, "UNKNOWN_PARAMETER", "x")


# ------------------------------------------------------------------------- fast path


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/v1/123"),            # served by cart_read.fast
    ("GET", "/api/v1/999"),            # fast path, 404 from PostgreSQL's empty answer
    ("GET", "/api/v1/123?minOffset=1"),
    ("GET", "/api/v1/carts"),
    ("GET", "/api/v1/products"),
    ("GET", "/api/v1/123/"),
    ("GET", "/api/v1/a%20b"),
    ("GET", "/api/v1/" + "x" * 65),
    ("HEAD", "/api/v1/123"),
    ("POST", "/api/v1/123"),
])
def test_the_fast_path_answers_exactly_like_the_router(method: str, path: str) -> None:
    from cart_read.fast import with_fast_cart_reads

    def build(fast: bool) -> ReadClient:
        r = FakeRedis()
        r.put(cart())
        app = create_app(CFG, redis=r, db_pool=FakePool([], [], []), waiter=CartWaiters(4))
        if not fast:
            app.user_middleware = [m for m in app.user_middleware
                                   if m.cls is not with_fast_cart_reads]
        return ReadClient(app)

    fast = build(True).request(method, path)
    routed = build(False).request(method, path)
    assert (fast.status_code, fast.content) == (routed.status_code, routed.content)
    assert sorted(fast.headers.items()) == sorted(routed.headers.items())


def test_a_cart_read_answers_the_customers_version_as_etag() -> None:
    r = FakeRedis()
    r.put(cart(version=7))
    resp = client(r).get("/api/v1/123")  # the fast path
    assert resp.headers["ETag"] == '"7"'
    resp = client(r).get("/api/v1/123?minOffset=0")  # through the router, read-your-write
    assert resp.status_code == 200 and resp.headers["ETag"] == '"7"'


def test_the_fallback_etag_is_the_version_postgresql_holds() -> None:
    c = cart(version=5)
    resp = client(FakeRedis(), FakePool([(5, orjson.loads(encode_cart_details(c)))])).get(
        "/api/v1/123")
    assert resp.status_code == 200 and resp.headers["ETag"] == '"5"'
