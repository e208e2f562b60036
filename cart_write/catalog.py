"""The optional product check: a Redis view of the catalog, consulted only when it is ready."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import redis

from cart_contract.layout import PRODUCT_DOC_FIELD, catalog_ready_key, product_key
from cart_contract.secrets import redact_url

log = logging.getLogger("cart_write.catalog")


class Catalog(Protocol):
    """Answers whether a product exists, or None when nobody can tell."""

    def knows(self, product_id: str) -> bool | None:
        """True/False from a ready catalog view; None when there is no view (accept)."""
        ...


class NoCatalog:
    """No catalog view: every product is accepted and the aggregator decides."""

    def knows(self, product_id: str) -> bool | None:
        """Always None: nothing to check against."""
        return None


class RedisCatalog:
    """The catalog sink's Redis view (cart_contract.layout: `catalog:ready`, `product:{id}`).

    Hot path: whether the view is ready is remembered for `ready_ttl_s`, and products found
    are remembered for `known_ttl_s`, so a busy API asks Redis rarely. Products not found are
    never remembered: a product the catalog gains is accepted at once. (A product deleted from
    the catalog may be accepted for up to `known_ttl_s`; the aggregator then rejects it, as it
    does whenever there is no view at all.)
    Redis trouble never fails a request: the check is skipped, logged, and not retried for
    `backoff_s`, so a dead Redis costs at most one timeout per backoff period per process.
    """

    MAX_REMEMBERED = 100_000

    def __init__(
        self,
        url: str,
        timeout_s: float = 0.25,
        backoff_s: float = 2.0,
        ready_ttl_s: float = 1.0,
        known_ttl_s: float = 5.0,
        client: Any = None,
        key_prefix: str = "",
    ) -> None:
        self._client = client or redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._url = redact_url(url)  # only ever logged
        self._key_prefix = key_prefix
        self._ready_key = catalog_ready_key(key_prefix)
        self._backoff_s = backoff_s
        self._ready_ttl_s = ready_ttl_s
        self._known_ttl_s = known_ttl_s
        self._skip_until = 0.0
        self._ready: tuple[float, bool] = (0.0, False)  # (valid until, catalog:ready exists)
        self._known: dict[str, float] = {}  # product id -> remembered until
        self._lock = threading.Lock()

    def knows(self, product_id: str) -> bool | None:
        """Whether the product exists; None when Redis is down or the view is not ready."""
        now = time.monotonic()
        if now < self._skip_until:
            return None
        ready_until, ready = self._ready
        if now < ready_until:
            if not ready:
                return None
            if self._known.get(product_id, 0.0) > now:
                return True
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.exists(self._ready_key)
            pipe.hexists(product_key(product_id, self._key_prefix), PRODUCT_DOC_FIELD)
            ready_n, known = pipe.execute()
        except redis.RedisError as exc:
            self._redis_failed(exc)
            return None
        now = time.monotonic()
        self._ready = (now + self._ready_ttl_s, bool(ready_n))
        if not ready_n:
            return None
        if known:
            if len(self._known) >= self.MAX_REMEMBERED:
                self._known.clear()
            self._known[product_id] = now + self._known_ttl_s
        return bool(known)

    def _redis_failed(self, exc: Exception) -> None:
        with self._lock:
            if time.monotonic() >= self._skip_until:
                log.warning("catalog check skipped for %.0fs, Redis at %s failed: %s",
                            self._backoff_s, self._url, exc)
                self._skip_until = time.monotonic() + self._backoff_s
