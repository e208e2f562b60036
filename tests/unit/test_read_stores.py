"""The read API's pinned Redis reader: one reconnect after a broken socket, then the error."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from cart_read.stores import PinnedReader


class FakeConn:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.disconnects = 0

    def send_command(self, *args: Any) -> None:
        self.sent = args

    def read_response(self) -> list[bytes | None]:
        if self.failures:
            raise self.failures.pop(0)
        return [b"1", None]

    def disconnect(self) -> None:
        self.disconnects += 1


class FakePool:
    def __init__(self, *failures: Exception) -> None:
        self.conn = FakeConn(list(failures))

    def get_connection(self) -> FakeConn:
        return self.conn

    def release(self, conn: FakeConn) -> None:
        pass


class FakeClient:
    def __init__(self, pool: FakePool) -> None:
        self.connection_pool = pool


def test_a_broken_socket_is_reconnected_once() -> None:
    pool = FakePool(redis.ConnectionError("Connection reset by peer"))
    reader = PinnedReader(FakeClient(pool))  # type: ignore[arg-type]
    assert reader.hmget("cart:1", ("v", "doc")) == [b"1", None]
    assert pool.conn.sent == ("HMGET", "cart:1", "v", "doc")
    assert pool.conn.disconnects == 1


def test_a_second_connection_failure_is_raised() -> None:
    pool = FakePool(*[redis.ConnectionError("refused")] * 3)
    reader = PinnedReader(FakeClient(pool))  # type: ignore[arg-type]
    with pytest.raises(redis.ConnectionError):
        reader.hmget("cart:1", ("v",))
    assert pool.conn.disconnects == 2 and len(pool.conn.failures) == 1


@pytest.mark.parametrize("error, disconnects", [
    (redis.TimeoutError("slow"), 1), (redis.ResponseError("WRONGTYPE"), 0),
])
def test_other_errors_are_raised_at_once(error: Exception, disconnects: int) -> None:
    pool = FakePool(error)
    reader = PinnedReader(FakeClient(pool))  # type: ignore[arg-type]
    with pytest.raises(type(error)):
        reader.hmget("cart:1", ("v",))
    assert pool.conn.disconnects == disconnects
