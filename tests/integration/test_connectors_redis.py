"""Connectors against a real Redis: the cart and product compare-and-sets, notifications, keys."""

from __future__ import annotations

import uuid
from decimal import Decimal

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cart_contract import Product, decode_cart_details, encode_cart_details, encode_product
from cart_contract.layout import cart_key, catalog_ready_key, product_key
from cart_contract.redis_carts import RedisCarts
from connectors.records import ProductItem
from connectors.sinks import RedisCartWriter
from connectors.stores import RedisProducts
from tests.support.connectors import FakeMessage, cart

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def listen(client: redis.Redis, channel: str) -> redis.client.PubSub:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=2)  # the subscribe confirmation
    return pubsub


def notifications(client: redis.Redis, pubsub: redis.client.PubSub, channel: str) -> list[dict]:
    """Every notification so far: all of them arrived once a marker published after them did."""
    client.publish(channel, b'{"end":true}')
    out = []
    while (m := pubsub.get_message(timeout=5)) is not None:
        note = orjson.loads(m["data"])
        if note == {"end": True}:
            return out
        out.append(note)
    raise AssertionError("the end marker never arrived")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(list(range(1, 9))), dups=st.lists(st.integers(1, 8), max_size=6),
       cuts=st.lists(st.integers(0, 14), max_size=4))
def test_the_highest_version_wins_in_any_order_and_batching(client, order, dups, cuts) -> None:
    """Older and repeated records change nothing, however they are ordered and batched."""
    prefix, channel = f"t:{uuid.uuid4().hex}:", f"t:{uuid.uuid4().hex}"
    pubsub = listen(client, channel)
    sink = RedisCartWriter(client, channel, prefix)
    records = [FakeMessage(encode_cart_details(cart("c", v, qty=v)), b"c", i)
               for i, v in enumerate([*order, *dups])]
    bounds = sorted({0, len(records), *[c for c in cuts if c < len(records)]})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        assert sink(records[lo:hi]) == []
    stored = client.hgetall(f"{prefix}cart:c")
    assert stored[b"v"] == b"8"
    assert decode_cart_details(stored[b"doc"]) == cart("c", 8, qty=8)
    seen = [n["version"] for n in notifications(client, pubsub, channel)]
    # One notification per applied write: strictly increasing, ending at the winner.
    assert seen == sorted(set(seen)) and seen[-1] == 8 and sink.written == len(seen)
    pubsub.close()


def test_notification_names_customer_version_and_event_position(client, unique) -> None:
    pubsub = listen(client, f"ch-{unique}")
    carts = RedisCarts(client, f"ch-{unique}", prefix=f"t:{unique}:")
    assert carts.put_many([cart(unique, 2)]) == 1
    assert carts.put_many([cart(unique, 2), cart(unique, 1)]) == 0
    assert carts.put_many([cart(unique, 3)], notify=False) == 1
    assert notifications(client, pubsub, f"ch-{unique}") == [
        {"customerId": unique, "version": 2, "partition": 0, "offset": 20}]
    pubsub.close()


def test_the_document_is_the_record_itself_and_keys_carry_the_prefix(client, unique) -> None:
    raw = encode_cart_details(cart(unique, 1))
    RedisCartWriter(client, "unused", f"t:{unique}:")([FakeMessage(raw, unique.encode())])
    assert client.hget(f"t:{unique}:cart:{unique}", "doc") == raw
    assert not client.exists(cart_key(unique))  # nothing outside the prefix


def test_big_batches_write_every_customer(client, unique) -> None:
    prefix = f"t:{unique}:"
    msgs = [FakeMessage(encode_cart_details(cart(f"c{i}", 1 + i % 3)), None, i)
            for i in range(2500)]
    sink = RedisCartWriter(client, "", prefix)
    assert sink(msgs) == [] and sink.written == 2500
    pipe = client.pipeline()
    for i in range(2500):
        pipe.hget(cart_key(f"c{i}", prefix), "v")
    assert pipe.execute() == [str(1 + i % 3).encode() for i in range(2500)]
    client.unlink(*[cart_key(f"c{i}", prefix) for i in range(2500)])  # a big one: tidy up


def product(pid: str, name: str) -> Product:
    return Product(pid, name, Decimal("12.50"), 4)


def test_products_guarded_by_offset_tombstones_keep_the_guard(client, unique) -> None:
    prefix = f"t:{unique}:"
    store = RedisProducts(client, prefix)
    key = product_key("1", prefix)

    def put(offset: int, p: Product | None) -> int:
        return store.put_many([ProductItem("1", offset, p, None)])

    assert put(4, product("1", "v4")) == 1
    assert client.get(catalog_ready_key(prefix)) == b"1"
    assert put(2, product("1", "older")) == 0
    assert put(4, product("1", "same offset")) == 0
    assert client.hget(key, "doc") == encode_product(product("1", "v4"))
    assert put(6, None) == 1  # tombstone: doc gone, offset kept as the guard
    assert client.hgetall(key) == {b"offset": b"6"}
    assert put(5, product("1", "resurrected by an older record")) == 0
    assert put(9, product("1", "back")) == 1
    assert client.hget(key, "doc") == encode_product(product("1", "back"))


def test_catalog_ready_is_not_set_by_tombstones_alone(client, unique) -> None:
    prefix = f"t:{unique}:"
    RedisProducts(client, prefix).put_many([ProductItem("7", 1, None, None)])
    assert not client.exists(catalog_ready_key(prefix))
    assert client.hgetall(product_key("7", prefix)) == {b"offset": b"1"}
