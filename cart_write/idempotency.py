"""Idempotency records: a retried command answers what the first one did and writes nothing.

Modelled on payment APIs' Idempotency-Key. One Redis record per key, shared by every write-API
instance:

- `begin` reserves the key with a short-lived *pending* record (SET NX GET: one round trip)
  holding the request's fingerprint, or returns the record already there;
- after the broker's ack, `complete` replaces it with the response, kept for the retention
  (24 h by default);
- a request that fails before anything is written (validation, unknown product, Kafka down)
  `abandon`s its reservation, so a retry runs again.

A pending record outlives a crashed API by at most its own TTL; a retry after that publishes
again under the same deterministic eventId, which the aggregator's dedupe drops (the second line
of defence). Redis trouble is `IdempotencyUnavailable`: the API answers 503 rather than break
the promise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis

from cart_contract.layout import idempotency_key

PENDING, DONE = "pending", "done"

# Compare-and-delete: only our own pending record goes (another may have replaced it).
_ABANDON = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end"


class IdempotencyUnavailable(Exception):
    """The record store cannot be reached: a keyed request cannot be served safely."""


@dataclass(frozen=True)
class Previous:
    """The record a key already has."""

    fingerprint: str
    state: str
    status: int = 0
    body: bytes = b""


def fingerprint(route: str, fields: dict[str, Any]) -> str:
    """A digest of what the request asks for: its route and its canonical body.

    Canonical means the validated command's fields, so key order, whitespace, or `"qty": null`
    versus no qty do not make the same request look different.
    """
    canonical = orjson.dumps({"route": route, **fields}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class IdempotencyStore(Protocol):
    """Where idempotency records live."""

    def begin(self, key: str, fingerprint: str) -> Previous | None:
        """Reserve `key` (None) or return the record it already has."""
        ...

    def complete(self, key: str, fingerprint: str, status: int, body: bytes) -> None:
        """Store the response a reserved key answered."""
        ...

    def abandon(self, key: str, fingerprint: str) -> None:
        """Drop a reservation whose request wrote nothing."""
        ...


def _pending(fp: str) -> bytes:
    return orjson.dumps({"fp": fp, "state": PENDING})


def _decode(raw: bytes) -> Previous:
    doc = orjson.loads(raw)
    return Previous(doc["fp"], doc["state"], doc.get("status", 0),
                    doc.get("body", "").encode())


class RedisIdempotencyStore:
    """Records in Redis under `layout.idempotency_key`, JSON `{"fp","state","status","body"}`."""

    def __init__(self, client: Any, *, ttl_s: int, pending_ttl_s: int,
                 key_prefix: str = "") -> None:
        self._client = client
        self._ttl_ms = ttl_s * 1000
        self._pending_ms = pending_ttl_s * 1000
        self._prefix = key_prefix
        self._abandon = client.register_script(_ABANDON)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float, ttl_s: int, pending_ttl_s: int,
                 key_prefix: str = "") -> RedisIdempotencyStore:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                      socket_connect_timeout=timeout_s)
        return cls(client, ttl_s=ttl_s, pending_ttl_s=pending_ttl_s, key_prefix=key_prefix)

    def begin(self, key: str, fingerprint: str) -> Previous | None:
        try:
            old = self._client.set(idempotency_key(key, self._prefix), _pending(fingerprint),
                                   nx=True, get=True, px=self._pending_ms)
        except redis.RedisError as exc:
            raise IdempotencyUnavailable(f"idempotency records unavailable: {exc}") from exc
        return None if old is None else _decode(old)

    def complete(self, key: str, fingerprint: str, status: int, body: bytes) -> None:
        record = orjson.dumps({"fp": fingerprint, "state": DONE, "status": status,
                               "body": body.decode()})
        try:
            self._client.set(idempotency_key(key, self._prefix), record, px=self._ttl_ms)
        except redis.RedisError as exc:
            raise IdempotencyUnavailable(f"idempotency record not stored: {exc}") from exc

    def abandon(self, key: str, fingerprint: str) -> None:
        try:
            self._abandon(keys=[idempotency_key(key, self._prefix)], args=[_pending(fingerprint)])
        except redis.RedisError as exc:
            # The pending record expires on its own; a retry meanwhile gets 409.
            raise IdempotencyUnavailable(f"idempotency record not released: {exc}") from exc
