"""Connectors against a real PostgreSQL: version-guarded carts and lines, products, poison."""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cart_contract import Product, encode_cart_details, encode_product
from connectors.migrate import migrate
from connectors.records import ProductItem
from connectors.sinks import CatalogWriter, PostgresCartWriter
from connectors.stores import upsert_products
from tests.support.connectors import FakeMessage, cart, fresh_database, upsert_carts

pytestmark = pytest.mark.integration


@pytest.fixture
def db(database_url: str, unique: str) -> str:
    """A fresh database on the current schema."""
    url = fresh_database(database_url, f"test_{unique}")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return url


@pytest.fixture
def conn(db: str):
    with psycopg.connect(db, autocommit=True) as c:
        yield c


def rows(conn: psycopg.Connection, customer: str) -> list[tuple]:
    return conn.execute("SELECT cart_id, generation, status, version, total_qty, total_price "
                        "FROM carts WHERE customer_id = %s ORDER BY generation",
                        (customer,)).fetchall()


def lines(conn: psycopg.Connection, customer: str) -> list[tuple]:
    return conn.execute("SELECT cart_id, item_id, position, item_name, qty, unit_price, "
                        "total_price FROM cart_lines WHERE cart_id LIKE %s ORDER BY 1, 3",
                        (f"{customer}:%",)).fetchall()


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(list(range(1, 7))), dups=st.lists(st.integers(1, 6), max_size=4),
       cuts=st.lists(st.integers(0, 10), max_size=3))
def test_the_highest_version_wins_in_any_order_and_batching(db, order, dups, cuts) -> None:
    """Versions 1-3 are generation 1 (3 checks it out), 4-6 generation 2; any order, any cut."""
    customer = uuid.uuid4().hex[:12]

    def record(v: int) -> bytes:
        return encode_cart_details(cart(customer, v, generation=1 if v <= 3 else 2, qty=v,
                                        lines=1 + v % 3, checked_out=v == 3))

    msgs = [FakeMessage(record(v), customer.encode(), i) for i, v in enumerate([*order, *dups])]
    bounds = sorted({0, len(msgs), *[c for c in cuts if c < len(msgs)]})
    sink = PostgresCartWriter(db)
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        assert sink(msgs[lo:hi]) == []
    with psycopg.connect(db) as conn:
        assert rows(conn, customer) == [
            (f"{customer}:1", 1, "CHECKED_OUT", 3, 3, Decimal("31.50")),
            (f"{customer}:2", 2, "OPEN", 6, 6, Decimal("63.00"))]
        assert [(c, i, pos) for c, i, pos, *_ in lines(conn, customer)] == [
            (f"{customer}:1", "1", 0), (f"{customer}:2", "1", 0)]
    sink.db.close()


def test_lines_follow_the_winning_version_and_doc_is_the_record(conn, unique) -> None:
    v1 = cart(unique, 1, lines=3, qty=2)
    v2 = cart(unique, 2, lines=1, qty=5, item_name="Other")
    assert upsert_carts(conn, [v1]) == 1
    assert len(lines(conn, unique)) == 3
    assert upsert_carts(conn, [v2, v1]) == 1
    assert upsert_carts(conn, [v1]) == 0  # older: ignored, lines untouched
    assert lines(conn, unique) == [(f"{unique}:1", "1", 0, "Other 1", 5, Decimal("10.50"),
                                    Decimal("52.50"))]
    doc, *last = conn.execute("SELECT doc, last_partition, last_offset, last_event_id "
                              "FROM carts WHERE cart_id = %s", (f"{unique}:1",)).fetchone()
    assert doc == orjson.loads(encode_cart_details(v2))
    assert last == [0, 20, v2.last_event.event_id]


@pytest.mark.parametrize("stored_before", [False, True])
def test_a_cart_with_two_lines_of_one_item_is_dead_lettered(db, unique, stored_before) -> None:
    good = cart(f"{unique}-g", 1)
    twice = cart(unique, 2, lines=2)
    twice = replace(twice, line_items=(twice.line_items[0],
                                       replace(twice.line_items[1], item_id="1")))
    sink = PostgresCartWriter(db)
    if stored_before:
        assert sink([FakeMessage(encode_cart_details(cart(unique, 1, lines=1)), None, 0)]) == []
    poison = sink([FakeMessage(encode_cart_details(good), None, 1),
                   FakeMessage(encode_cart_details(twice), None, 2)])
    assert [(p.message.offset(), p.error.reason) for p in poison] == [(2, "STORE_REJECTED")]
    with psycopg.connect(db) as conn:
        assert [r[3] for r in rows(conn, unique)] == ([1] if stored_before else [])
        assert len(lines(conn, f"{unique}-g")) == 1
    sink.db.close()


def test_customers_leave_room_for_hot_updates(conn) -> None:
    """Every customers update changes no indexed column: with room on the page it is HOT."""
    options = conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'customers'"
                           ).fetchone()[0]
    assert "fillfactor=50" in options


def test_read_api_indexes_exist(conn) -> None:
    defs = {r[0]: r[1] for r in conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")}
    joined = "\n".join(defs.values())
    for cols in ("(customer_id, generation DESC)", "(status, cart_id)", "(total_price, cart_id)",
                 "cart_lines USING btree (item_id)"):
        assert cols in joined, cols


def test_records_postgres_refuses_are_dead_lettered_and_the_rest_lands(db, unique) -> None:
    good = [FakeMessage(encode_cart_details(cart(f"{unique}-{i}", 1)), None, i)
            for i in range(6)]
    huge = cart(f"{unique}-h", 1)
    too_big = encode_cart_details(huge).replace(b'"totalPrice":"10.50"',
                                                b'"totalPrice":"1000000000000000000.00"')
    nul = encode_cart_details(cart(f"{unique}-z", 1, item_name="bad\u0000name"))
    generation = encode_cart_details(cart(f"{unique}-g", 1, generation=2**40))
    bad = [FakeMessage(too_big, None, 10), FakeMessage(nul, None, 11),
           FakeMessage(generation, None, 12)]
    sink = PostgresCartWriter(db)
    poison = sink([good[0], bad[0], *good[1:4], bad[1], *good[4:], bad[2]])
    assert sorted(p.message.offset() for p in poison) == [10, 11, 12]
    assert {p.error.reason for p in poison} == {"STORE_REJECTED"}
    with psycopg.connect(db) as conn:
        stored = conn.execute("SELECT customer_id FROM carts ORDER BY 1").fetchall()
    assert stored == sorted((f"{unique}-{i}",) for i in range(6))
    sink.db.close()


def product(pid: str, name: str, price: str = "12.50") -> Product:
    return Product(pid, name, Decimal(price), 4)


def test_products_upsert_by_offset_and_tombstones_keep_the_row(conn) -> None:
    def put(pid: str, offset: int, p: Product | None) -> None:
        upsert_products(conn, [ProductItem(pid, offset, p, None)])

    def row(pid: str) -> tuple:
        return conn.execute("SELECT product_name, price, stock_qty, deleted, source_offset "
                            "FROM products WHERE product_id = %s", (pid,)).fetchone()

    put("1", 3, product("1", "Phone", "649.99"))
    put("1", 1, product("1", "Older"))
    assert row("1") == ("Phone", Decimal("649.99"), 4, False, 3)
    put("1", 5, None)
    assert row("1") == ("Phone", Decimal("649.99"), 4, True, 5)
    put("1", 4, product("1", "Older than the tombstone"))
    assert row("1")[3:] == (True, 5)
    put("2", 7, None)  # a tombstone for a product never seen
    assert row("2") == (None, None, None, True, 7)


def test_catalog_sink_writes_both_stores(db, redis_url, unique) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    prefix = f"t:{unique}:"
    sink = CatalogWriter(client, db, prefix)
    p1 = product("1", "IPhone 12", "65000")
    msgs = [FakeMessage(encode_product(p1), b"1", 0), FakeMessage(b"{}", b"9", 1),
            FakeMessage(encode_product(product("2", "Gone")), b"2", 2),
            FakeMessage(None, b"2", 3)]
    poison = sink(msgs)
    assert [p.message.offset() for p in poison] == [1]
    assert client.hget(f"{prefix}product:1", "doc") == encode_product(p1)
    assert client.hgetall(f"{prefix}product:2") == {b"offset": b"3"}
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT product_id, deleted FROM products ORDER BY 1").fetchall() == [
            ("1", False), ("2", True)]
    sink.db.close()


def _fold_records(customer: str, steps: list[tuple[str, str | None, int | None]]) -> list[bytes]:
    """The production fold's records for one customer's events (product "g": 1e9, stock 10^6)."""
    from cart_aggregator.fold import RESERVED, LineCache, apply, encode_state, needs_reservation
    from cart_aggregator.join import product_tuple

    gold = product_tuple(Product("g", "Gold", Decimal("1000000000.00"), 10**6))
    state, cache, out = None, LineCache(), []
    for n, (etype, item, qty) in enumerate(steps):
        w = (str(uuid.uuid4()), etype, customer, item, qty, f"2026-11-22T10:00:{n:02d}Z", 0, n,
             None)
        answer = gold if etype == "ITEM_ADDED" else None
        if needs_reservation(state, w):  # reserved, at the price it was added at
            answer = (RESERVED, tuple((li.item_id, li.item_name, li.qty, li.unit_price)
                                      for li in state.lines))
        state, _ = apply(state, w, answer, cache)
        out.append(encode_state(state))
    return out


@pytest.mark.parametrize("one_batch", [True, False])
def test_an_orders_row_is_never_rewritten_by_later_records(conn, db, unique,
                                                           one_batch) -> None:
    customer = f"{unique}-o"
    records = _fold_records(customer, [
        ("ITEM_ADDED", "g", 10_000), ("CHECKOUT", None, None), ("ITEM_REMOVED", "g", None),
        ("CHECKOUT", None, None), ("CART_CLEARED", None, None)])
    sink = PostgresCartWriter(db)
    msgs = [FakeMessage(r, customer.encode(), i) for i, r in enumerate(records)]
    if one_batch:
        assert sink(msgs) == []
    else:
        for m in msgs[:2]:
            assert sink([m]) == []
        stored = conn.execute("SELECT doc, updated_at FROM carts").fetchall()
        for m in msgs[2:]:
            assert sink([m]) == []
        assert conn.execute("SELECT doc, updated_at FROM carts").fetchall() == stored
    order = orjson.loads(records[1])
    del order["customer"]
    (doc,) = conn.execute("SELECT doc FROM carts WHERE cart_id = %s",
                          (f"{customer}:1",)).fetchone()
    assert doc == order and doc["version"] == 2 and doc["totalPrice"] == "10000000000000.00"
    version, current = conn.execute("SELECT version, doc FROM customers WHERE customer_id = %s",
                                    (customer,)).fetchone()
    assert version == current["customer"]["version"] == 5
    assert [r["reason"] for r in current["customer"]["rejected"]] == [
        "NOT_IN_CART", "NO_OPEN_CART", "NO_OPEN_CART"]
    sink.db.close()


def test_a_customer_with_only_rejections_gets_no_cart_row(conn, db, unique) -> None:
    customer = f"{unique}-r"
    records = _fold_records(customer, [("CHECKOUT", None, None), ("ITEM_REMOVED", "g", 1)])
    sink = PostgresCartWriter(db)
    assert sink([FakeMessage(r, customer.encode(), i) for i, r in enumerate(records)]) == []
    assert rows(conn, customer) == []
    (doc,) = conn.execute("SELECT doc FROM customers WHERE customer_id = %s",
                          (customer,)).fetchone()
    assert [r["reason"] for r in doc["rejected"]] == ["NO_OPEN_CART", "NOT_IN_CART"]
    sink.db.close()


def test_the_largest_cart_total_is_stored_exactly(conn, db, unique) -> None:
    from cart_contract.limits import CART_TOTAL_MAX

    big = cart(f"{unique}-b", 1, qty=10_000, lines=200)
    big = replace(big, line_items=tuple(replace(li, unit_price=Decimal("1000000000.00"),
                                                total_price=Decimal("10000000000000.00"))
                                        for li in big.line_items),
                  total_price=CART_TOTAL_MAX)
    sink = PostgresCartWriter(db)
    assert sink([FakeMessage(encode_cart_details(big), None, 0)]) == []
    total, lines_total = conn.execute(
        "SELECT c.total_price, (SELECT sum(total_price) FROM cart_lines l"
        " WHERE l.cart_id = c.cart_id) FROM carts c WHERE cart_id = %s",
        (big.cart_id,)).fetchone()
    assert total == lines_total == CART_TOTAL_MAX
    sink.db.close()


# Every character COPY's text format or JSON escapes, and some that need neither.
COPY_NAME = ("\t\n\r\\ \"'\x01\x7fé€𝄞,;|" * 20)[:200]


def test_the_copy_path_stores_every_value_the_contract_allows(conn, db, unique) -> None:
    """The largest records (up to LINES_MAX lines, NAME_MAX names of characters COPY and JSON
    escape, 64-character ids, the largest prices, quantities, partition and offset, then the
    order at CART_TOTAL_MAX), in one batch through the sink's COPY path, land exactly."""
    from cart_aggregator.fold import RESERVED, LineCache, apply, encode_state
    from cart_aggregator.join import product_tuple
    from cart_contract import decode_cart_details
    from cart_contract.limits import CART_TOTAL_MAX, LINE_QTY_MAX, LINES_MAX, PRICE_MAX

    customer = (unique + "c" * 64)[:64]
    cache, state, records = LineCache(), None, []
    for i in range(LINES_MAX):
        item = (f"{i:03d}" + "i" * 64)[:64]
        p = product_tuple(Product(item, COPY_NAME, PRICE_MAX, 2**31 - 1))
        w = (f"00000000-0000-4000-8000-{i:012d}", "ITEM_ADDED", customer, item, LINE_QTY_MAX,
             "2026-11-22T10:00:00.000000Z", 2**31 - 1, 2**62 + i, None)
        state, _ = apply(state, w, p, cache)
        records.append(encode_state(state))
    w = ("00000000-0000-4000-8000-000000009999", "CHECKOUT", customer, None, None,
         "2026-11-22T10:00:01.000000Z", 2**31 - 1, 2**62 + 9999, None)
    answer = (RESERVED, tuple((li.item_id, li.item_name, li.qty, li.unit_price)
                              for li in state.lines))
    state, _ = apply(state, w, answer, cache)  # reserved: the order
    records.append(encode_state(state))
    last = decode_cart_details(records[-1])
    assert last.status == "CHECKED_OUT" and last.total_price == CART_TOTAL_MAX
    sink = PostgresCartWriter(db)
    assert sink([FakeMessage(r, customer.encode(), i) for i, r in enumerate(records)]) == []
    (doc, total, version) = conn.execute(
        "SELECT doc, total_price, version FROM carts WHERE cart_id = %s",
        (last.cart_id,)).fetchone()
    expected = orjson.loads(records[-1])
    customer_doc = conn.execute("SELECT doc FROM customers WHERE customer_id = %s",
                                (customer,)).fetchone()[0]
    assert customer_doc == expected
    del expected["customer"]
    assert doc == expected and total == CART_TOTAL_MAX and version == last.version
    stored = conn.execute("SELECT item_id, position, item_name, qty, unit_price, total_price "
                          "FROM cart_lines WHERE cart_id = %s ORDER BY position",
                          (last.cart_id,)).fetchall()
    assert stored == [(li.item_id, pos, li.item_name, li.qty, li.unit_price, li.total_price)
                      for pos, li in enumerate(last.line_items)]
    assert len(stored) == LINES_MAX and {r[2] for r in stored} == {COPY_NAME}
    sink.db.close()


def test_a_record_with_json_whitespace_and_unknown_fields_lands_as_written(conn, db,
                                                                          unique) -> None:
    """The staging COPY carries the record's own bytes: line ends, tabs and backslashes in
    its JSON (between tokens and in strings) arrive intact; `carts.doc` is the record less its
    `customer` part, unknown fields included, and the customer's row is the whole record."""
    from cart_contract import CustomerView

    c = cart(unique, 3, lines=2, item_name="tab\there \\ back\nslash")
    c = replace(c, customer=CustomerView(4, replace(c.last_event, offset=99), (),
                                         "2026-11-22T10:00:01.000000Z"))
    written = orjson.loads(encode_cart_details(c))
    written["somethingNew"] = {"a": "x\\y\tz"}
    raw = orjson.dumps(written, option=orjson.OPT_INDENT_2).replace(b"\n", b"\r\n\t")
    assert b"\t" in raw and b"\\\\" in raw
    sink = PostgresCartWriter(db)
    assert sink([FakeMessage(raw, unique.encode(), 0)]) == []
    (doc,) = conn.execute("SELECT doc FROM carts WHERE cart_id = %s", (c.cart_id,)).fetchone()
    (customer_doc, version, offset) = conn.execute(
        "SELECT doc, version, last_offset FROM customers WHERE customer_id = %s",
        (unique,)).fetchone()
    assert customer_doc == written and (version, offset) == (4, 99)
    del written["customer"]
    assert doc == written
    assert [r[3] for r in lines(conn, unique)] == ["tab\there \\ back\nslash 1",
                                                   "tab\there \\ back\nslash 2"]
    sink.db.close()
