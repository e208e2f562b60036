"""Idempotency records in a real Redis: reserve, complete, replay, abandon, expiry, outage."""

from __future__ import annotations

import time

import pytest
import redis

from cart_contract.layout import idempotency_key
from cart_write.idempotency import (
    DONE,
    PENDING,
    IdempotencyUnavailable,
    RedisIdempotencyStore,
    fingerprint,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str, unique: str) -> RedisIdempotencyStore:
    return RedisIdempotencyStore(redis.Redis.from_url(redis_url), ttl_s=60, pending_ttl_s=1,
                                 key_prefix=f"test-{unique}:")


def test_a_key_is_reserved_once_then_answers_with_its_record(
        store: RedisIdempotencyStore) -> None:
    fp = fingerprint("add", {"customerId": "1", "itemId": "1", "qty": 1})
    assert store.begin("k", fp) is None
    assert store.begin("k", fp).state == PENDING
    store.complete("k", fp, 202, b'{"eventId":"e","offset":7}')
    again = store.begin("k", fp)
    assert (again.fingerprint, again.state, again.status, again.body) == (
        fp, DONE, 202, b'{"eventId":"e","offset":7}')


def test_an_abandoned_key_can_be_used_again_and_a_stale_pending_one_expires(
        store: RedisIdempotencyStore) -> None:
    assert store.begin("a", "fp1") is None
    store.abandon("a", "fp1")
    assert store.begin("a", "fp2") is None
    store.abandon("a", "someone else's")  # not ours: stays
    assert store.begin("a", "fp2").state == PENDING
    time.sleep(1.2)  # the pending TTL: a crashed request does not block its key for a day
    assert store.begin("a", "fp3") is None


def test_a_completed_record_is_kept_for_the_retention(
        store: RedisIdempotencyStore, redis_url: str, unique: str) -> None:
    store.begin("t", "fp")
    store.complete("t", "fp", 202, b"{}")
    ttl = redis.Redis.from_url(redis_url).pttl(idempotency_key("t", f"test-{unique}:"))
    assert 55_000 < ttl <= 60_000


def test_an_unreachable_redis_is_reported_not_ignored() -> None:
    dead = RedisIdempotencyStore.from_url("redis://127.0.0.1:1/0", timeout_s=0.2, ttl_s=60,
                                          pending_ttl_s=5)
    with pytest.raises(IdempotencyUnavailable):
        dead.begin("k", "fp")
