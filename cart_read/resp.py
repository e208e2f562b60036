"""A minimal pipelined Redis client for the hot cart read: one TCP connection per event loop,
RESP parsed by hiredis, replies matched to callers in order.

redis.asyncio spends most of a cached read's CPU in its command path (a pooled connection
checked out and in, a command packed and a reply read through several coroutine layers per
call). Here a call is one `transport.write` and one future: every read in flight shares the
connection (Redis answers in order), so there is no pool either. Only HMGET is spoken; every
other command of the read API stays on redis.asyncio (Stores.redis).

Failures raise redis.ConnectionError / redis.ResponseError, so callers handle them as before
(queries.load_cart trips the breaker and reads PostgreSQL); a broken connection is dropped
and the next call opens a new one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import hiredis
import redis
from redis.asyncio.connection import parse_url


def encode(*args: bytes) -> bytes:
    """A RESP command (array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def supports(url: str) -> bool:
    """Whether this client can talk to `url` (plain TCP; TLS and unix sockets are not
    spoken here and stay on redis.asyncio)."""
    return url.startswith("redis://")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        # Made by create_connection in the loop it belongs to; never used from another one.
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # Commands of one event-loop pass, written together when the pass ends: a burst of
        # reads (woken waiters, concurrent requests) costs one send, and Redis one read.
        self.outbox: list[bytes] = []

    def flush(self) -> None:
        out, self.outbox = self.outbox, []
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader, pending = self.reader, self.pending
        reader.feed(data)
        while True:
            reply = reader.gets()
            if reply is False:
                return
            # A caller that timed out leaves its future here, cancelled: its reply is dropped.
            future = pending.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(redis.ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = redis.ConnectionError(f"redis connection lost: {exc or 'closed by server'}")
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)


class PipelinedRedis:
    """HMGET over one pipelined connection; made and used in one event loop."""

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        opts = parse_url(url)
        self._host = opts.get("host", "localhost")
        self._port = int(opts.get("port", 6379))
        self._connect_timeout_s = connect_timeout_s
        # AUTH and SELECT, sent first on every new connection.
        hello: list[bytes] = []
        password = opts.get("password")
        if password:
            username = opts.get("username")
            hello.append(encode(b"AUTH", *([username.encode()] if username else []),
                                password.encode()))
        if int(opts.get("db", 0) or 0):
            hello.append(encode(b"SELECT", str(opts["db"]).encode()))
        self._hello = hello
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, proto = await loop.create_connection(_Protocol, self._host, self._port)
                try:
                    for command in self._hello:
                        await self._send(proto, command)
                except BaseException:
                    assert proto.transport is not None
                    proto.transport.close()
                    raise
        except (OSError, TimeoutError) as exc:
            raise redis.ConnectionError(f"redis connect {self._host}:{self._port}: {exc}") from exc
        return proto

    async def _connection(self) -> _Protocol:
        proto = self._proto
        loop = asyncio.get_running_loop()
        if proto is not None and not proto.closed and proto.loop is loop:
            return proto
        # One connect at a time; concurrent callers wait for it. (A connection or a connect of
        # another loop is dropped, not closed: its transport belongs to that loop.)
        if self._connecting is not None and self._connecting.get_loop() is not loop:
            self._connecting = None
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            proto = await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        self._proto = proto
        return proto

    @staticmethod
    def _send(proto: _Protocol, command: bytes) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        proto.pending.append(future)
        if not proto.outbox:
            asyncio.get_running_loop().call_soon(proto.flush)
        proto.outbox.append(command)
        return future

    async def hmget(self, key: str, fields: tuple[str, ...]) -> list[Any]:
        """HMGET key fields..., the values as bytes (None when absent)."""
        proto = self._proto
        if proto is None or proto.closed or proto.loop is not asyncio.get_running_loop():
            proto = await self._connection()
        command = encode(b"HMGET", key.encode(), *(f.encode() for f in fields))
        result: list[Any] = await self._send(proto, command)
        return result

    async def aclose(self) -> None:
        """Close the connection (and stop a connect under way); calls in flight fail with
        ConnectionError. Never waits on Redis."""
        loop = asyncio.get_running_loop()
        connecting, self._connecting = self._connecting, None
        if connecting is not None and connecting.get_loop() is loop:
            if not connecting.done():
                # A caller cancelled while connecting leaves the connect running (shielded):
                # it must not outlive the client (nor the loop, nor leak its socket).
                connecting.cancel()
                await asyncio.wait({connecting}, timeout=1.0)
            if connecting.done() and not connecting.cancelled():
                if connecting.exception() is None and connecting.result() is not self._proto:
                    _close(connecting.result())
        proto, self._proto = self._proto, None
        if proto is not None and proto.loop is loop:
            _close(proto)


def _close(proto: _Protocol) -> None:
    if proto.transport is not None:
        proto.transport.close()
