"""Event-stream tickets: a browser's EventSource cannot send `Authorization`, so in the secure
profile a page trades its bearer token for a short-lived ticket (POST .../events/ticket) and
opens the stream with `?ticket=`. Only the ticket's hash is stored; it opens only its customer's
stream, for `ttl_s` seconds, and never reaches a log (granian's access log is off)."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

import redis

from cart_contract.layout import stream_ticket_key
from cart_web.auth import Principal, unauthorized
from cart_web.errors import ApiError

TICKET_PARAM = "ticket"


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


async def issue(client: Any, customer_id: str, ttl_s: int, prefix: str = "") -> str:
    """A new ticket for customer_id's stream, valid for ttl_s seconds."""
    ticket = secrets.token_urlsafe(24)
    try:
        await client.set(stream_ticket_key(_hash(ticket), prefix), customer_id, ex=ttl_s)
    except redis.RedisError as exc:
        raise ApiError(503, "STORE_UNAVAILABLE", "stream tickets cannot be issued right now",
                       headers={"Retry-After": "1"}) from exc
    return ticket


async def redeem(client: Any, ticket: str, prefix: str = "") -> Principal:
    """The principal a ticket stands for (its customer, no admin scope), or 401."""
    if not ticket or len(ticket) > 128:
        raise unauthorized("invalid stream ticket")
    key = stream_ticket_key(_hash(ticket), prefix)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.ttl(key)
        customer, ttl = await pipe.execute()
    except redis.RedisError as exc:
        raise ApiError(503, "STORE_UNAVAILABLE", "stream tickets cannot be checked right now",
                       headers={"Retry-After": "1"}) from exc
    if customer is None:
        raise unauthorized("invalid or expired stream ticket")
    return Principal(customer.decode(), False, time.time() + max(0, int(ttl)))


async def principal_for_stream(scope: Any, path: str, client: Any,
                               prefix: str = "") -> Principal | None:
    """The guard's other credential: `?ticket=` on an event stream (GET .../events); None when
    the request has none (then the bearer token is required)."""
    if scope.get("method") != "GET" or not path.endswith("/events"):
        return None
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(TICKET_PARAM)
    if not values:
        return None
    return await redeem(client, values[0], prefix)
