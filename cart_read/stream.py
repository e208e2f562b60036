"""`GET /api/v1/<customerId>/events`: the customer's cart as Server-Sent Events.

The current cart at once, then each newer version as the redis sink announces it. `id:` is the
customer's version (the ETag), so a reconnecting EventSource sends `Last-Event-ID` and gets
only what is newer: no duplicates, and never a missed state (each event is the whole cart; two
versions landing between two reads arrive as the newer one). A comment every
READ_STREAM_HEARTBEAT_S keeps proxies from closing an idle stream; `retry:` tells the browser
when to reconnect. The stream is one waiter of the process's subscription (waiters.py, no
subscription of its own); the client going away ends it at once (a task waits for
`http.disconnect`), and so does the worker's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.types import Message, Receive, Scope, Send

from cart_read import metrics, queries
from cart_read.errors import StoreUnavailable

if TYPE_CHECKING:
    from cart_read.app import ReadContext

log = logging.getLogger(__name__)

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # Proxies (nginx) must pass each event on at once, not buffer the stream.
    (b"x-accel-buffering", b"no"),
]


def event(version: int, doc: bytes) -> bytes:
    """One SSE event: the cart document (one line of JSON) with its version as id."""
    return b"id: %d\ndata: %s\n\n" % (version, doc)


class CartStream:
    """An ASGI response streaming one customer's cart versions until the client leaves."""

    def __init__(self, ctx: ReadContext, customer_id: str, last_version: int) -> None:
        self.ctx = ctx
        self.customer_id = customer_id
        self.last_version = last_version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = self.ctx
        gone = asyncio.Event()
        with ctx.waiters.waiting(self.customer_id, -1, stream=True) as waiter, \
                metrics.STREAMS.track_inprogress():

            async def watch() -> None:
                # The only message left for a GET is the client's disconnect.
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()
                waiter.event.set()

            watcher = asyncio.create_task(watch())
            try:
                await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
                await self._body(send, b"retry: %d\n\n" % ctx.config.stream_retry_ms)
                await self._run(send, waiter, gone)
            except Exception as exc:  # a send to a client gone mid-write; servers differ in what
                log.debug("stream of %s ended: %r", self.customer_id, exc)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _run(self, send: Send, waiter: Any, gone: asyncio.Event) -> None:
        ctx = self.ctx
        heartbeat_s = ctx.config.stream_heartbeat_s
        poll_s = ctx.config.degraded_poll_ms / 1000
        last_sent = time.monotonic()
        while not gone.is_set() and not ctx.closing.is_set():
            try:
                cart = await queries.load_cart(ctx.stores, self.customer_id)
            except StoreUnavailable as exc:
                log.warning("stream of %s: store unavailable: %s", self.customer_id, exc)
                cart = None
            if cart is not None and cart.version > self.last_version:
                await self._body(send, event(cart.version, cart.doc))
                self.last_version = cart.version
                last_sent = time.monotonic()
            # Without a subscription nothing wakes us: re-read now and then until it is back.
            wait_s = heartbeat_s - (time.monotonic() - last_sent)
            if not ctx.waiters.connected:
                wait_s = min(wait_s, poll_s)
            woken = await waiter.wait(wait_s)
            if not woken and time.monotonic() - last_sent >= heartbeat_s:
                await self._body(send, b": heartbeat\n\n")
                last_sent = time.monotonic()

    @staticmethod
    async def _body(send: Send, data: bytes) -> None:
        message: Message = {"type": "http.response.body", "body": data, "more_body": True}
        await send(message)
