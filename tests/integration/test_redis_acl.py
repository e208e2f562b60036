"""The secure profile's Redis ACL users against a private redis-server started with them.

Each service's own adapter runs as its user and works; what the user must not do is refused;
a client without credentials, or with a wrong password, gets nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from cart_contract import Product
from cart_contract.layout import cart_key, catalog_ready_key, idempotency_key, product_key
from cart_contract.redis_carts import RedisCarts
from cart_web.ratelimit import FixedWindow
from cart_write.catalog import RedisCatalog
from cart_write.idempotency import RedisIdempotencyStore
from connectors.records import ProductItem
from connectors.stores import RedisProducts
from infra.redis_acl import USERS, passwords, service_url, write_aclfile
from tests.support.connectors import cart
from tests.support.ports import free_port

pytestmark = pytest.mark.integration
PREFIX = f"acl-{uuid.uuid4().hex[:6]}:"
CHANNEL = f"acl-updates-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory) -> Iterator[tuple[str, dict[str, str], Path]]:
    """A private redis-server with the ACL file; its base URL, the passwords, the run dir."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    run_dir = tmp_path_factory.mktemp("redis-acl")
    secrets = passwords(run_dir)
    aclfile = run_dir / "users.acl"
    write_aclfile(aclfile, secrets, key_prefix=PREFIX, channel=CHANNEL)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(run_dir), "--aclfile", str(aclfile)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(service_url(base, "admin", secrets["admin"])).ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server refused the ACL file"
                assert time.monotonic() < deadline
                time.sleep(0.1)
        yield base, secrets, run_dir
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def as_user(acl_redis, user: str) -> redis.Redis:
    base, secrets, _ = acl_redis
    return redis.Redis.from_url(service_url(base, user, secrets[user]))


def test_no_credentials_or_a_wrong_password_get_nothing(acl_redis) -> None:
    base, _, run_dir = acl_redis
    with pytest.raises(redis.RedisError, match="(?i)auth"):
        redis.Redis.from_url(base).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(service_url(base, "read-api", "wrong")).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(service_url(base, "default", "")).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(service_url(base, "default", "wrong")).ping()
    # The ACL file holds hashes, never the passwords.
    text = (run_dir / "users.acl").read_text()
    assert not any(pw in text for pw in passwords(run_dir, create=False).values())
    assert set(passwords(run_dir, create=False)) == {"default", *USERS}


def test_the_sinks_write_their_keys_and_nothing_else(acl_redis) -> None:
    carts = RedisCarts(as_user(acl_redis, "sink-redis"), CHANNEL, PREFIX)
    assert carts.put_many([cart("c1", 1)]) == 1
    products = RedisProducts(as_user(acl_redis, "sink-catalog"), PREFIX)
    item = ProductItem("1", 5, Product("1", "IPhone 12", Decimal("65000"), 3), None)
    assert products.put_many([item]) == 1
    as_user(acl_redis, "sink-catalog").set(catalog_ready_key(PREFIX), "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user(acl_redis, "sink-redis").hset(product_key("1", PREFIX), "doc", "x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user(acl_redis, "sink-catalog").hset(cart_key("c1", PREFIX), "doc", "x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_user(acl_redis, "sink-redis").flushall()


def test_the_write_api_checks_products_keeps_its_records_and_counts(acl_redis) -> None:
    base, secrets, _ = acl_redis
    url = service_url(base, "write-api", secrets["write-api"])
    RedisProducts(as_user(acl_redis, "sink-catalog"), PREFIX).put_many(
        [ProductItem("2", 1, Product("2", "S21", Decimal("55000"), 3), None)])
    as_user(acl_redis, "sink-catalog").set(catalog_ready_key(PREFIX), "1")
    catalog = RedisCatalog(url, key_prefix=PREFIX)
    assert catalog.knows("2") is True and catalog.knows("nope") is False
    store = RedisIdempotencyStore.from_url(url, timeout_s=1, ttl_s=60, pending_ttl_s=10,
                                           key_prefix=PREFIX)
    assert store.begin("k1", "fp") is None
    store.complete("k1", "fp", 202, b"{}")
    assert store.begin("k1", "fp").status == 202
    assert store.begin("k2", "fp") is None
    store.abandon("k2", "fp")
    # One instant for both hits: on the wall clock they could fall on either side of a
    # minute boundary, i.e. in two windows, and the second would be allowed.
    now = time.time()
    limit = FixedWindow(lambda: as_user(acl_redis, "write-api"), "commands", 1, 60,
                        key_prefix=PREFIX, clock=lambda: now)
    assert limit.hit("c1") is None and limit.hit("c1") is not None  # counted in Redis
    w = as_user(acl_redis, "write-api")
    with pytest.raises(redis.exceptions.NoPermissionError):
        w.hset(product_key("2", PREFIX), "doc", "x")  # products are read-only to it
    with pytest.raises(redis.exceptions.NoPermissionError):
        w.hget(cart_key("c1", PREFIX), "doc")  # carts are none of its business


def test_the_read_api_reads_and_listens_only(acl_redis) -> None:
    RedisCarts(as_user(acl_redis, "sink-redis"), CHANNEL, PREFIX).put_many([cart("c2", 1)])
    r = as_user(acl_redis, "read-api")
    assert r.hmget(cart_key("c2", PREFIX), ["v", "doc"])[0] == b"1"
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    assert pubsub.get_message(timeout=2) is None  # the subscribe confirmation, skipped
    RedisCarts(as_user(acl_redis, "sink-redis"), CHANNEL, PREFIX).put_many([cart("c2", 2)])
    assert pubsub.get_message(timeout=5) is not None
    limit = FixedWindow(lambda: r, "waits", 5, 60, key_prefix=PREFIX)
    assert limit.hit("c2") is None
    for attempt in (
        lambda: r.hset(cart_key("c2", PREFIX), "doc", "x"),
        lambda: RedisCarts(r, CHANNEL, PREFIX).put_many([cart("c2", 3)]),  # the re-warm CAS
        lambda: r.get(idempotency_key("k1", PREFIX)),
        lambda: r.publish(CHANNEL, "x"),
        lambda: r.keys("*"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()


def test_script_writes_survive_a_restart_with_the_acl_file(tmp_path) -> None:
    """Regression: with `default` off, Redis 7.0 dropped every MULTI/EXEC of the AOF at load."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    secrets = passwords(tmp_path)
    write_aclfile(tmp_path / "users.acl", secrets, key_prefix=PREFIX, channel=CHANNEL)
    port = free_port()
    base = f"redis://127.0.0.1:{port}/0"
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
           "--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path),
           "--aclfile", str(tmp_path / "users.acl")]

    def started() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(service_url(base, "admin", secrets["admin"])).ping()
                return proc
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)

    proc = started()
    try:
        sink = redis.Redis.from_url(service_url(base, "sink-redis", secrets["sink-redis"]))
        RedisCarts(sink, CHANNEL, PREFIX).put_many([cart("survivor", 1)])
        # Two writes in one script (product, then the ready marker): logged as MULTI/EXEC.
        catalog = redis.Redis.from_url(service_url(base, "sink-catalog",
                                                   secrets["sink-catalog"]))
        RedisProducts(catalog, PREFIX).put_many(
            [ProductItem("9", 1, Product("9", "Survivor", Decimal("1"), 1), None)])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    proc = started()
    try:
        admin = redis.Redis.from_url(service_url(base, "admin", secrets["admin"]))
        assert admin.hget(cart_key("survivor", PREFIX), "v") == b"1"
        assert admin.hget(product_key("9", PREFIX), "offset") == b"1"
        assert admin.exists(catalog_ready_key(PREFIX))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
