"""Read-your-write waiters: dispatch, cap, cleanup and the wait loop (asyncio, no I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from cart_read.waiters import CartWaiters, TooManyWaiters, wait_for_offset


@dataclass
class Cart:
    last_offset: int | None
    version: int = 0
    partition: int = 0

    @property
    def last_position(self) -> tuple[int, int] | None:
        return None if self.last_offset is None else (self.partition, self.last_offset)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def const(value: Any) -> Callable[[], Awaitable[Any]]:
    async def load() -> Any:
        return value

    return load


def test_notify_wakes_only_that_customer_once_the_offset_is_reached() -> None:
    w = CartWaiters(10)
    with w.waiting("a", 5) as wa, w.waiting("a", 9) as wa9, w.waiting("b", 5) as wb:
        assert w.notify("a", 4) == 0
        assert w.notify("a", 5) == 1
        assert wa.event.is_set() and not wa9.event.is_set() and not wb.event.is_set()
        assert w.notify("a", None) == 2  # no offset: everyone re-reads
        assert w.notify("nobody", 100) == 0


def test_a_stream_is_woken_by_every_notification_of_its_customer() -> None:
    w = CartWaiters(10)
    with w.waiting("a", -1, stream=True) as s, w.waiting("a", 50) as wa:
        assert (len(w), w.streams) == (2, 1)
        assert w.notify("a", 3, 0) == 1
        assert s.event.is_set() and not wa.event.is_set()
    assert (len(w), w.streams) == (0, 0)


def test_waiters_are_capped_and_always_removed() -> None:
    w = CartWaiters(2)
    with w.waiting("a", 1), w.waiting("b", 1):
        assert len(w) == 2
        with pytest.raises(TooManyWaiters), w.waiting("c", 1):
            pass
    assert len(w) == 0
    with pytest.raises(RuntimeError), w.waiting("a", 1):
        raise RuntimeError("handler failed")
    assert len(w) == 0
    assert w.notify("a", 10) == 0


def test_thousands_of_waiters_in_one_process() -> None:
    async def scenario() -> list[bool]:
        w = CartWaiters(20_000)
        state = {"offset": 1}

        async def load() -> Cart:
            return Cart(state["offset"])

        tasks = [asyncio.create_task(wait_for_offset(load, w, f"c{i % 100}", 5, 60.0))
                 for i in range(5_000)]
        while len(w) < 5_000:
            await asyncio.sleep(0.01)
        state["offset"] = 5
        for i in range(100):
            w.notify(f"c{i}", 5)
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert len(w) == 0
        return [o.reached for o in outcomes]

    assert all(run(scenario()))


def test_handle_message_parses_the_sink_notification() -> None:
    w = CartWaiters(10)
    with w.waiting("42", 3) as waiter:
        assert w.handle_message(b"not json") == 0
        assert w.handle_message(b'{"version": 1}') == 0
        assert w.handle_message(orjson.dumps({"customerId": "42", "offset": 2})) == 0
        assert not waiter.event.is_set()
        # customerId as a JSON int still names customer "42".
        note = {"customerId": 42, "version": 7, "partition": 1, "offset": 3}
        assert w.handle_message(orjson.dumps(note)) == 1
        assert waiter.event.is_set()


def test_already_reached_is_answered_even_at_the_cap() -> None:
    w = CartWaiters(0)  # any registration would raise
    out = run(wait_for_offset(const(Cart(10)), w, "a", 10, 5.0))
    assert out.reached and out.cart.last_offset == 10


def test_notification_wakes_the_waiter() -> None:
    async def scenario() -> Any:
        w = CartWaiters(10)
        state = {"cart": Cart(1, version=1)}

        async def load() -> Cart:
            return state["cart"]

        async def writer() -> None:
            while not len(w):
                await asyncio.sleep(0.001)
            state["cart"] = Cart(7, version=2)
            w.notify("a", 7)

        task = asyncio.create_task(writer())
        # A 60 s timeout: if the notification did not wake it, the test would hang.
        out = await asyncio.wait_for(wait_for_offset(load, w, "a", 7, 60.0), 10)
        await task
        assert len(w) == 0
        return out

    out = run(scenario())
    assert out.reached and out.cart.version == 2


def test_every_read_happens_registered_so_no_update_is_lost() -> None:
    """A write landing right after a read notifies the registered waiter: it reads again."""
    w = CartWaiters(10)
    calls = []

    async def load() -> Cart:
        calls.append(len(w))
        if len(calls) == 1:
            # Store updated (and notified) right after this first, stale read.
            assert w.notify("a", 5) == 1
            return Cart(4)
        return Cart(5)

    out = run(wait_for_offset(load, w, "a", 5, 60.0))
    assert out.reached
    assert calls == [1, 1]  # both reads with the waiter registered


def test_timeout_returns_the_last_cart_read() -> None:
    w = CartWaiters(10)
    out = run(wait_for_offset(const(Cart(3, version=9)), w, "a", 4, 0.05))
    assert not out.reached and out.cart.version == 9
    out = run(wait_for_offset(const(None), w, "a", 4, 0.0))
    assert not out.reached and out.cart is None
    assert len(w) == 0


def test_without_a_subscription_the_waiter_polls() -> None:
    def broken_client() -> Any:
        raise ConnectionError("redis is down")

    async def scenario() -> None:
        w = CartWaiters(10, client_factory=broken_client)
        reads = []

        async def load() -> Cart:
            reads.append(1)
            return Cart(8 if len(reads) >= 3 else 1)

        try:
            # No notification will ever come; only polling (every 10 ms) can reach offset 8.
            out = await wait_for_offset(load, w, "a", 8, 60.0, poll_s=0.01)
            assert out.reached and not w.connected
        finally:
            await w.close()

    run(scenario())


def test_a_read_token_names_its_partition() -> None:
    # After partitions were added the customer's events go to partition 7, whose offsets are
    # small: a bare offset 3 would be "reached" by the old partition's 900, a token is not.
    w = CartWaiters(10)
    old = Cart(900, partition=2)
    assert run(wait_for_offset(const(old), w, "a", 3, 0.0)).reached
    assert not run(wait_for_offset(const(old), w, "a", 3, 0.0, partition=7)).reached
    assert run(wait_for_offset(const(Cart(3, partition=7)), w, "a", 3, 0.0,
                               partition=7)).reached
    with w.waiting("a", 3, 7) as waiter:
        assert w.notify("a", 900, 2) == 0 and not waiter.event.is_set()
        assert w.notify("a", 3, 7) == 1


class FakePubSub:
    """Confirms the subscription, hands out the queued messages, then breaks (or idles)."""

    def __init__(self, messages: list[dict[str, object]], breaks: bool) -> None:
        self.queue = list(messages)
        self.breaks = breaks
        self.closed = False

    async def subscribe(self, channel: str) -> None:
        self.channel = channel

    async def get_message(self, ignore_subscribe_messages: bool = False,
                          timeout: float | None = 0.0) -> dict[str, object] | None:
        if self.queue:
            return self.queue.pop(0)
        if self.breaks:
            raise ConnectionError("Connection reset by peer")
        await asyncio.sleep(3600)
        return None

    async def aclose(self) -> None:
        self.closed = True


def test_the_subscriber_reconnects_after_a_lost_connection_and_every_waiter_rereads() -> None:
    note = orjson.dumps({"customerId": "a", "offset": 3})
    connections = [FakePubSub([{"type": "message", "data": note}], breaks=True),
                   FakePubSub([], breaks=False)]
    made: list[FakePubSub] = []

    class Client:
        def pubsub(self) -> FakePubSub:
            made.append(connections.pop(0))
            return made[-1]

    async def scenario() -> CartWaiters:
        w = CartWaiters(10, client_factory=Client, channel="updates")
        try:
            with w.waiting("a", 5) as waiter:
                # Woken at least by each (re)subscription: the first and the one after the loss.
                assert await waiter.wait(10)
                for _ in range(1000):
                    if len(made) == 2 and w.connected:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("the subscriber did not reconnect")
            assert made[0].closed and made[0].channel == "updates"
        finally:
            await w.close()
        return w

    w = run(scenario())
    assert made[1].closed and not w.connected
