"""The read API's secure profile on ASGI against the real Redis: bearer tokens, event-stream
tickets (issued for the customer's own token only, stored as a hash, opening only that
customer's stream), and the per-principal wait cap."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis

from cart_contract import CartDetails, EventPosition, LineItem, encode_cart_details
from cart_contract.layout import cart_key, stream_ticket_key, waiting_key
from cart_read.app import create_app
from cart_read.config import Config
from cart_web.auth import issue_token
from tests.support.asgi_stream import Stream, scope
from tests.support.connectors import wait_until
from tests.support.read_client import ReadClient

pytestmark = pytest.mark.integration

SECRET = "read-secure-test-secret-read-secure-test-secret"


def config(redis_url: str, database_url: str, **over: object) -> Config:
    return Config(profile="secure", jwt_secret=SECRET, redis_url=redis_url,
                  database_url=database_url, **over)


def bearer(cfg: Config, sub: str, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(cfg, sub, admin=admin)}"}


@pytest.fixture
def cfg(redis_url: str, database_url: str) -> Config:
    return config(redis_url, database_url)


@pytest.fixture
def client(cfg: Config) -> Iterator[ReadClient]:
    with ReadClient(create_app(cfg)) as c:
        yield c


def put(r: redis.Redis, cid: str, version: int) -> bytes:
    line = LineItem("1", "IPhone 12", 1, Decimal("65000"), Decimal("65000"))
    doc = encode_cart_details(CartDetails(
        cid, f"{cid}:1", "OPEN", (line,), 1, Decimal("65000"), version,
        EventPosition(f"e{version}", 0, version), (), "2025-01-01T00:00:00.000000Z"))
    r.hset(cart_key(cid), mapping={"v": version, "doc": doc})
    return doc


def test_a_ticket_is_the_customers_own_and_stored_as_a_hash(client, cfg, redis_url,
                                                              unique) -> None:
    cid = f"t-{unique}"
    url = f"/api/v1/{cid}/events/ticket"
    assert client.post(url).status_code == 401
    assert client.post(url, headers=bearer(cfg, f"other-{unique}")).status_code == 403
    # An admin token reads any cart, but streams are the customer's own.
    assert client.post(url, headers=bearer(cfg, "ops", admin=True)).status_code == 403
    resp = client.post(url, headers=bearer(cfg, cid))
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    ticket = body["ticket"]
    assert body["url"] == f"/api/v1/{cid}/events?ticket={ticket}"
    assert body["expiresInS"] == cfg.stream_ticket_ttl_s
    r = redis.Redis.from_url(redis_url)
    key = stream_ticket_key(hashlib.sha256(ticket.encode()).hexdigest())
    assert r.get(key) == cid.encode() and 0 < r.ttl(key) <= cfg.stream_ticket_ttl_s
    assert not list(r.scan_iter(match=f"*{ticket}*", count=1000))


def test_a_ticket_opens_only_its_customers_stream(client, cfg, redis_url, unique) -> None:
    cid = f"t-{unique}"
    r = redis.Redis.from_url(redis_url)
    doc = put(r, cid, 4)
    ticket = client.post(f"/api/v1/{cid}/events/ticket", headers=bearer(cfg, cid)).json()[
        "ticket"]
    assert client.get(f"/api/v1/{cid}/events?ticket=nope").status_code == 401
    assert client.get(f"/api/v1/other-{unique}/events?ticket={ticket}").status_code == 403
    # Not a bearer token: it opens streams, nothing else.
    assert client.get(f"/api/v1/{cid}?ticket={ticket}").status_code == 401

    async def stream() -> tuple[int, bytes]:
        app = create_app(cfg)
        s = Stream(app, scope(f"/api/v1/{cid}/events", query=f"ticket={ticket}".encode()))
        status = (await s.start())["status"]
        await s.chunk()  # retry:
        first = await s.chunk()
        await s.close()
        await app.state.cart_read.stores.close()
        return status, first

    status, first = asyncio.run(stream())
    assert status == 200 and first == b"id: 4\ndata: " + doc + b"\n\n"


def test_the_wait_cap_per_principal_still_holds(redis_url, database_url, unique) -> None:
    cfg = config(redis_url, database_url, max_waits_per_principal=1)
    cid = f"t-{unique}"
    put(redis.Redis.from_url(redis_url), cid, 1)
    with ReadClient(create_app(cfg)) as client:
        held: dict[str, int] = {}

        def wait() -> None:
            held["status"] = client.get(f"/api/v1/{cid}?minOffset=5&timeout=3000",
                                        headers=bearer(cfg, cid)).status_code

        t = threading.Thread(target=wait)
        t.start()
        # The first wait must hold the slot before the second asks (else the second takes it):
        # its counter in Redis says when.
        store = redis.Redis.from_url(redis_url)
        counter = waiting_key(cid, cfg.redis_key_prefix)
        wait_until(lambda: store.get(counter) == b"1", 15, "the first wait to hold its slot",
                   every_s=0.02)
        second = client.get(f"/api/v1/{cid}?minOffset=5&timeout=10", headers=bearer(cfg, cid))
        t.join(10)
        assert second.status_code == 429 and second.headers["Retry-After"] == "1"
        assert held["status"] == 504
        # Released: the next wait may start.
        third = client.get(f"/api/v1/{cid}?minOffset=5&timeout=10", headers=bearer(cfg, cid))
        assert third.status_code == 504
