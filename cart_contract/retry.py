"""Retrying an operation while what it needs is away (a store, a broker): one helper, on tenacity.

    read = retrying("Redis read", on=redis.ConnectionError, attempts=2)
    read.call(fetch, key)                     # run now, retrying
    @retrying("schema migration", until=stop_event)
    def migrate() -> None: ...                # or as a decorator

Each failure is logged once with its reason (WARNING by default) and followed by an
exponential, jittered, capped wait. It gives up when `attempts` are used up or `deadline_s`
has passed (re-raising the last failure), or when the `until` event is set (raising Stopped,
also in the middle of a wait); with none of these it keeps trying.

It lives in cart_contract because every service and tool imports that package, and its only
dependency (tenacity) is in requirements/base.txt.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import tenacity

log = logging.getLogger("cartstream.retry")

P = ParamSpec("P")
T = TypeVar("T")


class Stopped(Exception):
    """The `until` event was set before the operation succeeded."""


class _Backoff(tenacity.wait.wait_base):
    """first_s, doubling up to max_s; each wait shortened by up to `jitter` of itself.

    Shortened, never lengthened, so `max_s` stays a true bound; the jitter keeps processes that
    lost the same server from coming back at the same instant.
    """

    def __init__(self, first_s: float, max_s: float, jitter: float) -> None:
        self.first_s, self.max_s, self.jitter = first_s, max_s, jitter

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        delay = min(self.max_s, self.first_s * 2 ** (retry_state.attempt_number - 1))
        return delay * (1 - self.jitter * random.random())


class _Deadline(tenacity.stop.stop_base):
    def __init__(self, at: float, clock: Callable[[], float]) -> None:
        self.at, self.clock = at, clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.clock() >= self.at


@dataclass(frozen=True)
class Retry:
    """How to retry one kind of operation; build it with `retrying`."""

    what: str
    on: tuple[type[BaseException], ...]
    attempts: int | None
    deadline_s: float | None
    first_s: float
    max_s: float
    jitter: float
    until: threading.Event | None
    sleep: Callable[[float], object]
    clock: Callable[[], float]
    level: int
    logger: logging.Logger

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """fn(*args, **kwargs), retried as configured."""
        deadline = None if self.deadline_s is None else self.clock() + self.deadline_s
        # The first attempt runs bare: hot paths (a read per request) pay for tenacity's
        # bookkeeping (~10 µs) only once something has failed.
        try:
            return fn(*args, **kwargs)
        except self.on as exc:
            first: list[BaseException] = [exc]

        def attempt() -> T:
            if first:
                raise first.pop()  # the attempt above, reported to tenacity as its first
            return fn(*args, **kwargs)

        retrier = self._retrier(deadline)
        result = retrier(attempt)
        failed = retrier.statistics["attempt_number"] - 1
        self.logger.log(min(self.level, logging.INFO), "%s succeeded after %d failed attempt%s",
                        self.what, failed, "" if failed == 1 else "s")
        return result

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """As a decorator: every call of `fn` is retried."""

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def _retrier(self, deadline: float | None) -> tenacity.Retrying:
        stops: list[tenacity.stop.stop_base] = []
        if self.attempts is not None:
            stops.append(tenacity.stop_after_attempt(self.attempts))
        if deadline is not None:
            stops.append(_Deadline(deadline, self.clock))
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(self.on),
            stop=tenacity.stop_any(*stops) if stops else tenacity.stop_never,
            wait=_Backoff(self.first_s, self.max_s, self.jitter),
            sleep=self._wait,
            before_sleep=self._log_failure,
            reraise=True,
        )

    def _wait(self, seconds: float) -> None:
        if self.until is None:
            self.sleep(seconds)
        elif self.until.wait(seconds):
            raise Stopped(f"{self.what}: stopped while retrying")

    def _log_failure(self, retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        self.logger.log(self.level, "%s failed (%s: %s); retrying in %.1fs", self.what,
                        type(exc).__name__, str(exc).strip()[:300], delay)


def retrying(
    what: str,
    *,
    on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    attempts: int | None = None,
    deadline_s: float | None = None,
    until: threading.Event | None = None,
    first_s: float = 0.1,
    max_s: float = 5.0,
    jitter: float = 0.25,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    level: int = logging.WARNING,
    logger: logging.Logger = log,
) -> Retry:
    """A Retry for `what` (named in the logs) that retries the exceptions in `on`.

    attempts: give up after this many (the first included); deadline_s: give up once this long
    has passed since the call; until: raise Stopped once this event is set (waits end early);
    first_s, max_s: the first wait and the cap; jitter: the share by which a wait may be
    shortened at random; sleep: how to wait (tests pass a fake; without `until` only);
    clock: for the deadline; level: of the per-failure log line.
    """
    if attempts is not None and attempts < 1:
        raise ValueError("attempts must be at least 1")
    return Retry(what, on if isinstance(on, tuple) else (on,), attempts, deadline_s, first_s,
                 max_s, jitter, until, sleep, clock, level, logger)
