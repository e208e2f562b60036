"""Fakes of the read API's stores for tests without I/O: an async Redis over dicts, a psycopg
async pool answering canned rows, and a cart document to put in them."""

from __future__ import annotations

from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import redis

from cart_contract import CartDetails, EventPosition, LineItem, encode_cart_details
from cart_contract.layout import cart_key


def cart(customer: str = "123", version: int = 3, offset: int = 10, gen: int = 1) -> CartDetails:
    line = LineItem("1", "IPhone 12", 3, Decimal("65000"), Decimal("195000"))
    return CartDetails(customer, f"{customer}:{gen}", "OPEN", (line,), 3, Decimal("195000"),
                       version, EventPosition(f"e{version}", 2, offset), (),
                       "2025-01-01T00:00:00.000000Z")


class FakeRedis:
    """The few redis.Redis calls the read API makes, over dicts."""

    def __init__(self, down: bool = False) -> None:
        self.hashes: dict[str, dict[str, bytes]] = {}
        self.down = down
        self.evals: list[tuple[Any, ...]] = []

    def _check(self) -> None:
        if self.down:
            raise redis.ConnectionError("connection refused")

    async def hmget(self, key: str, fields: tuple[str, ...]) -> list[bytes | None]:
        self._check()
        h = self.hashes.get(key, {})
        return [h.get(f) for f in fields]

    def cas(self, key: str, v: int, doc: bytes) -> int:
        """The sink's compare-and-set on `v` (cart_contract.redis_carts.CART_CAS)."""
        self._check()
        self.evals.append((key, v, doc))
        cur = self.hashes.get(key, {}).get("v")
        if cur is not None and int(cur) >= v:
            return 0
        self.hashes[key] = {"v": str(v).encode(), "doc": doc}
        return 1

    def register_script(self, script: str) -> Any:
        assert "HSET" in script and "'v'" in script

        async def run(keys: list[str], args: list[Any]) -> int:
            return self.cas(keys[0], int(args[0]), args[1])

        return run

    async def ping(self) -> bool:
        self._check()
        return True

    def put(self, c: CartDetails) -> bytes:
        doc = encode_cart_details(c)
        self.hashes[cart_key(c.customer_id)] = {"v": str(c.version).encode(), "doc": doc}
        return doc


class FakePool:
    """A psycopg pool whose connections answer from a list of canned row lists."""

    def __init__(self, *answers: list[tuple[Any, ...]], error: Exception | None = None) -> None:
        self.answers = list(answers)
        self.error = error
        self.queries: list[tuple[Any, list[Any]]] = []

    @asynccontextmanager
    async def connection(self, timeout: float | None = None):
        if self.error is not None:
            raise self.error
        yield self

    async def execute(self, query: Any, params: Any = None) -> FakePool:
        self.queries.append((query, list(params or [])))
        return self

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self.answers.pop(0) if self.answers else []

    async def fetchone(self) -> tuple[Any, ...] | None:
        rows = await self.fetchall()
        return rows[0] if rows else None


class NoDb:
    """A pool that fails the test if a handler touches it."""

    def connection(self, timeout: float | None = None):
        raise AssertionError("the database must not be queried here")
