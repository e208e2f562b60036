"""Read-your-write: requests wait for the redis sink's notifications (layout.UPDATES_CHANNEL).

One subscriber thread per process listens on the channel and wakes only the waiters of the
customer named in a notification whose offset reached what they wait for. Each waiter is a
threading.Event held by one granian blocking thread, so the threads bound the waiters; on top,
`max_waiters` caps them per process (beyond it: 503 + Retry-After) so plain reads keep threads.
A waiter always re-reads the store after registering, so a notification sent between its first
read and its registration is never lost; after a (re)subscription every waiter re-reads too.
Granian does not tell a WSGI app that its client went away: a waiter lives at most until its
timeout, and is removed in `finally` whatever happens.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from cart_contract.layout import UPDATES_CHANNEL
from cart_contract.retry import Stopped, retrying

log = logging.getLogger(__name__)


class TooManyWaiters(Exception):
    """The process already holds max_waiters waiting requests."""


class Waiter:
    """One waiting request: a customer, the offset it waits for, an Event to be woken by."""

    __slots__ = ("customer_id", "min_offset", "partition", "event")

    def __init__(self, customer_id: str, min_offset: int, partition: int | None = None) -> None:
        self.customer_id = customer_id
        self.min_offset = min_offset
        self.partition = partition  # None: the offset is on whatever partition the cart is
        self.event = threading.Event()

    def reached_by(self, partition: int | None, offset: int | None) -> bool:
        """Whether a notified position may satisfy this waiter (it re-reads to make sure)."""
        if offset is None:
            return True
        if self.partition is not None and partition is not None and partition != self.partition:
            return False
        return offset >= self.min_offset

    def wait(self, timeout_s: float) -> bool:
        """Block until woken or timeout_s passed; True if woken. Re-arms for the next wait."""
        woken = self.event.wait(timeout_s)
        # Clearing before the caller re-reads the store: a wake-up after this point is either
        # seen by that read or sets the event again.
        self.event.clear()
        return woken


class CartWaiters:
    """Waiters keyed by customerId, plus the pub/sub subscriber thread that wakes them."""

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
        self._lock = threading.Lock()
        self._by_customer: dict[str, set[Waiter]] = {}
        self._count = 0
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stop = threading.Event()
        # Without a subscriber (tests call notify directly) notifications are assumed to arrive.
        self._connected = client_factory is None

    @property
    def connected(self) -> bool:
        """True while notifications can arrive (subscribed); waiters fall back to polling else."""
        return self._connected

    def __len__(self) -> int:
        return self._count

    @contextmanager
    def waiting(self, customer_id: str, min_offset: int,
                partition: int | None = None) -> Iterator[Waiter]:
        """Register a waiter for the block's duration; raises TooManyWaiters at the cap."""
        self._ensure_subscriber()
        waiter = Waiter(customer_id, min_offset, partition)
        with self._lock:
            if self._count >= self.max_waiters:
                raise TooManyWaiters(f"{self._count} requests already wait in this process")
            self._by_customer.setdefault(customer_id, set()).add(waiter)
            self._count += 1
        try:
            yield waiter
        finally:
            with self._lock:
                group = self._by_customer.get(customer_id)
                if group is not None:
                    group.discard(waiter)
                    if not group:
                        del self._by_customer[customer_id]
                self._count -= 1

    def notify(self, customer_id: str, offset: int | None, partition: int | None = None) -> int:
        """Wake the customer's waiters whose position is reached (all of them if offset is
        None); returns how many were woken."""
        with self._lock:
            group = self._by_customer.get(customer_id)
            if not group:
                return 0
            woken = [w for w in group if w.reached_by(partition, offset)]
        for w in woken:
            w.event.set()
        return len(woken)

    def wake_all(self) -> None:
        """Wake every waiter (after a (re)subscription or a lost connection) to re-read."""
        with self._lock:
            waiters = [w for group in self._by_customer.values() for w in group]
        for w in waiters:
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

    def _ensure_subscriber(self) -> None:
        if self._client_factory is None:
            return
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._connected = False
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="cart-updated-subscriber", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        factory = self._client_factory
        if factory is None:
            return
        # Any failure means: reconnect, never die (until close()).
        subscribe = retrying("notification subscriber: subscribing", until=self._stop,
                             max_s=5.0, logger=log)
        try:
            while not self._stop.is_set():
                self._listen(subscribe.call(self._subscribe, factory))
        except Stopped:
            pass

    def _subscribe(self, factory: Callable[[], Any]) -> Any:
        """A pub/sub connection whose subscription Redis confirmed (or close() was called)."""
        pubsub = factory().pubsub()
        try:
            pubsub.subscribe(self._channel)
            while not self._stop.is_set():
                msg = pubsub.get_message(timeout=1.0)
                if msg is not None and msg["type"] == "subscribe":
                    break
        except Exception:
            _close_quietly(pubsub)
            raise
        return pubsub

    def _listen(self, pubsub: Any) -> None:
        """Wake waiters from the notifications until the connection breaks or close()."""
        try:
            if self._stop.is_set():
                return
            # Notifications sent before this point were missed: everyone re-reads.
            self._connected = True
            self.wake_all()
            while not self._stop.is_set():
                msg = pubsub.get_message(timeout=1.0)
                if msg is not None and msg["type"] == "message":
                    self.handle_message(msg["data"])
        except Exception as exc:  # reconnect (the caller retries), never die
            log.warning("notification subscriber lost Redis, reconnecting: %s", exc)
        finally:
            if self._connected:
                self._connected = False
                self.wake_all()
            _close_quietly(pubsub)

    def close(self) -> None:
        """Stop the subscriber thread (if this process started one)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            thread.join(timeout=3)


@dataclass(frozen=True)
class WaitOutcome:
    """What a read-your-write wait ended with: reached or not, and the last cart read."""

    reached: bool
    cart: Any


def wait_for_offset(
    load: Callable[[], Any],
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
    cart = load()
    if _reached(cart, min_offset, partition):
        return WaitOutcome(True, cart)
    deadline = clock() + timeout_s
    with waiters.waiting(customer_id, min_offset, partition) as waiter:
        while True:
            # Registered first, read second: no notification can slip in between unseen.
            cart = load()
            if _reached(cart, min_offset, partition):
                return WaitOutcome(True, cart)
            remaining = deadline - clock()
            if remaining <= 0:
                return WaitOutcome(False, cart)
            # Without a subscription nothing will wake us: re-read now and then until it is back.
            waiter.wait(remaining if waiters.connected else min(remaining, poll_s))


def _reached(cart: Any, min_offset: int, partition: int | None = None) -> bool:
    if cart is None:
        return False
    position = cart.last_position
    if position is None:
        return False
    # A token names the partition: an offset of another partition says nothing about it.
    return (partition is None or position[0] == partition) and position[1] >= min_offset


def _close_quietly(pubsub: Any) -> None:
    try:
        pubsub.close()
    except Exception:  # closing a broken connection may fail too
        pass
