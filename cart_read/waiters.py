"""Read-your-write waits and event streams: woken by the redis sink's notifications
(layout.UPDATES_CHANNEL) through one pub/sub subscription per process.

One asyncio task per worker process listens on the channel and wakes only the waiters of the
customer a notification names whose offset reached what they wait for. A waiter is an
asyncio.Event, not a thread: thousands cost a few kilobytes each, so no per-worker cap is
needed beyond `max_waiters`, a high safety cap on memory and sockets (beyond it: 503).
A waiter always re-reads the store after registering, so a notification sent between its
first read and its registration is never lost; after a (re)subscription every waiter re-reads
too. Event streams (`stream=True`) are waiters that every notification of their customer wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from cart_contract.layout import UPDATES_CHANNEL

log = logging.getLogger(__name__)

RESUBSCRIBE_MAX_S = 5.0
CLOSE_S = 1.0


class TooManyWaiters(Exception):
    """The process already holds max_waiters waiting requests and streams."""


class Waiter:
    """One waiting request or stream: a customer, the offset it waits for, an Event."""

    __slots__ = ("customer_id", "min_offset", "partition", "event", "stream")

    def __init__(self, customer_id: str, min_offset: int, partition: int | None = None,
                 stream: bool = False) -> None:
        self.customer_id = customer_id
        self.min_offset = min_offset
        self.partition = partition  # None: the offset is on whatever partition the cart is
        self.event = asyncio.Event()
        self.stream = stream

    def reached_by(self, partition: int | None, offset: int | None) -> bool:
        """Whether a notified position may satisfy this waiter (it re-reads to make sure)."""
        if offset is None or self.stream:
            return True
        if self.partition is not None and partition is not None and partition != self.partition:
            return False
        return offset >= self.min_offset

    async def wait(self, timeout_s: float) -> bool:
        """Until woken or timeout_s passed; True if woken. Re-arms for the next wait."""
        if not self.event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), max(0.0, timeout_s))
        woken = self.event.is_set()
        # Cleared before the caller re-reads the store: a wake-up after this point is either
        # seen by that read or sets the event again.
        self.event.clear()
        return woken


class CartWaiters:
    """Waiters keyed by customerId, plus the pub/sub subscriber task that wakes them."""

    def __init__(
        self,
        max_waiters: int,
        *,
        client_factory: Callable[[], Any] | None = None,
        channel: str = UPDATES_CHANNEL,
    ) -> None:
        self.max_waiters = max_waiters
        self._client_factory = client_factory
        self._channel = channel
        self._by_customer: dict[str, set[Waiter]] = {}
        self._count = 0
        self._streams = 0
        self._task: asyncio.Task[None] | None = None
        # Without a subscriber (tests call notify directly) notifications are assumed to arrive.
        self._connected = client_factory is None

    @property
    def connected(self) -> bool:
        """True while notifications can arrive (subscribed); waiters fall back to polling else."""
        return self._connected

    def __len__(self) -> int:
        return self._count

    @property
    def streams(self) -> int:
        """How many of the registered waiters are event streams."""
        return self._streams

    @contextmanager
    def waiting(self, customer_id: str, min_offset: int, partition: int | None = None, *,
                stream: bool = False) -> Iterator[Waiter]:
        """Register a waiter for the block's duration; raises TooManyWaiters at the cap."""
        if self._count >= self.max_waiters:
            raise TooManyWaiters(f"{self._count} requests already wait in this process")
        self.ensure_subscriber()
        waiter = Waiter(customer_id, min_offset, partition, stream)
        self._by_customer.setdefault(customer_id, set()).add(waiter)
        self._count += 1
        self._streams += stream
        try:
            yield waiter
        finally:
            group = self._by_customer.get(customer_id)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._by_customer[customer_id]
            self._count -= 1
            self._streams -= stream

    def notify(self, customer_id: str, offset: int | None, partition: int | None = None) -> int:
        """Wake the customer's waiters whose position is reached (all of them if offset is
        None); returns how many were woken."""
        group = self._by_customer.get(customer_id)
        if not group:
            return 0
        woken = 0
        for w in group:
            if w.reached_by(partition, offset):
                w.event.set()
                woken += 1
        return woken

    def wake_all(self) -> None:
        """Wake every waiter (after a (re)subscription or a lost connection) to re-read."""
        for group in self._by_customer.values():
            for w in group:
                w.event.set()

    def handle_message(self, data: bytes | str) -> int:
        """Dispatch one notification (as cart_contract.redis_carts.notification builds it)."""
        if not self._by_customer:
            # Every process hears every cart update; with nobody waiting, skip the parse.
            return 0
        try:
            msg = orjson.loads(data)
            customer_id = msg["customerId"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.debug("ignoring malformed notification %r", data)
            return 0
        if not isinstance(customer_id, str):
            customer_id = str(customer_id)
        offset, partition = msg.get("offset"), msg.get("partition")
        if isinstance(offset, bool) or not isinstance(offset, int):
            offset = None
        if isinstance(partition, bool) or not isinstance(partition, int):
            partition = None
        return self.notify(customer_id, offset, partition)

    # ------------------------------------------------------------------------- subscriber

    def ensure_subscriber(self) -> None:
        """Start the subscriber task on the running loop unless one runs there already."""
        if self._client_factory is None:
            return
        task = self._task
        loop = asyncio.get_running_loop()
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._connected = False
        self._task = loop.create_task(self._run(), name="cart-updated-subscriber")

    async def _run(self) -> None:
        factory = self._client_factory
        assert factory is not None
        delay = 0.1
        # Any failure means: reconnect, never die (until close() cancels the task).
        while True:
            client = factory()
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                # redis-py can swallow a cancellation that lands while it connects (redis-py
                # #2028, #2551); the task would then block in get_message forever and hang the
                # worker's shutdown. A cancel requested by then is honoured here.
                if _cancel_requested():
                    raise asyncio.CancelledError
                # Notifications sent before this point were missed: everyone re-reads.
                self._connected = True
                self.wake_all()
                delay = 0.1
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if msg is not None and msg["type"] == "message":
                        self.handle_message(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect, never die
                log.warning("notification subscriber lost Redis, reconnecting in %.1f s: %s",
                            delay, exc)
            finally:
                if self._connected:
                    self._connected = False
                    self.wake_all()
                with contextlib.suppress(Exception):
                    # Bounded: closing a connection redis-py half-made must not hold shutdown.
                    await asyncio.shield(asyncio.wait_for(_close(pubsub, client), CLOSE_S))
            if _cancel_requested():
                raise asyncio.CancelledError
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESUBSCRIBE_MAX_S)

    async def close(self) -> None:
        """Stop the subscriber task (if one runs on this loop)."""
        task, self._task = self._task, None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2 * CLOSE_S)
            if not done:
                log.warning("notification subscriber did not stop within %.0f s", 2 * CLOSE_S)
            elif not task.cancelled() and task.exception() is not None:
                log.debug("notification subscriber ended with %r", task.exception())


def _cancel_requested() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _close(pubsub: Any, client: Any) -> None:
    await pubsub.aclose()
    if client is not None and hasattr(client, "aclose"):
        await client.aclose()


@dataclass(frozen=True)
class WaitOutcome:
    """What a read-your-write wait ended with: reached or not, and the last cart read."""

    reached: bool
    cart: Any


async def wait_for_offset(
    load: Callable[[], Awaitable[Any]],
    waiters: CartWaiters,
    customer_id: str,
    min_offset: int,
    timeout_s: float,
    *,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    partition: int | None = None,
) -> WaitOutcome:
    """Read until the cart's lastEvent reaches min_offset (on `partition` when given) or
    timeout_s passes.

    `load()` returns an object with `last_position` (or None). Raises TooManyWaiters.
    """
    deadline = clock() + timeout_s
    if len(waiters) >= waiters.max_waiters:
        # At the safety cap a wait that is already over is still answered.
        cart = await load()
        if reached(cart, min_offset, partition):
            return WaitOutcome(True, cart)
    # Registering costs a dict insert, a store read far more: register first, then one read
    # answers both "already there?" and "nothing slipped in before registering?". (Thousands
    # of waits arriving together halve their Redis reads.)
    with waiters.waiting(customer_id, min_offset, partition) as waiter:
        while True:
            # Registered first, read second: no notification can slip in between unseen.
            cart = await load()
            if reached(cart, min_offset, partition):
                return WaitOutcome(True, cart)
            remaining = deadline - clock()
            if remaining <= 0:
                return WaitOutcome(False, cart)
            # Without a subscription nothing will wake us: re-read now and then until it is back.
            await waiter.wait(remaining if waiters.connected else min(remaining, poll_s))


def reached(cart: Any, min_offset: int, partition: int | None = None) -> bool:
    """Whether a cart read's lastEvent is at or past min_offset (on `partition` if given)."""
    if cart is None:
        return False
    position = cart.last_position
    if position is None:
        return False
    # A token names the partition: an offset of another partition says nothing about it.
    return (partition is None or position[0] == partition) and position[1] >= min_offset
