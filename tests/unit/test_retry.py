"""The retry helper: when it retries, how long it waits, when it gives up, what it logs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from cart_contract.retry import Stopped, retrying


class Flaky:
    """Fails with the queued exceptions, then returns how many calls it took."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.args = (args, kwargs)
        if self.errors:
            raise self.errors.pop(0)
        return self.calls


class Sleeps(list[float]):
    """A fake sleep that records each wait (and can move a fake clock)."""

    def __init__(self, clock: list[float] | None = None) -> None:
        super().__init__()
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.clock is not None:
            self.clock[0] += seconds


def test_a_success_is_returned_at_once_without_waiting() -> None:
    sleeps, fn = Sleeps(), Flaky()
    assert retrying("op", sleep=sleeps).call(fn, 1, b=2) == 1
    assert fn.args == ((1,), {"b": 2}) and sleeps == []


def test_failures_are_retried_with_doubling_capped_waits() -> None:
    sleeps, fn = Sleeps(), Flaky(*[OSError("down")] * 6)
    assert retrying("op", sleep=sleeps, first_s=0.1, max_s=1.0, jitter=0).call(fn) == 7
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_jitter_only_shortens_a_wait_and_by_at_most_its_share() -> None:
    sleeps, fn = Sleeps(), Flaky(*[OSError("down")] * 200)
    retrying("op", sleep=sleeps, first_s=1.0, max_s=1.0, jitter=0.25).call(fn)
    assert all(0.75 <= s <= 1.0 for s in sleeps)
    assert len(set(sleeps)) > 1


def test_other_exceptions_are_not_retried() -> None:
    sleeps, fn = Sleeps(), Flaky(KeyError("bug"))
    with pytest.raises(KeyError):
        retrying("op", on=OSError, sleep=sleeps).call(fn)
    assert fn.calls == 1 and sleeps == []


def test_after_the_last_attempt_the_last_failure_is_raised() -> None:
    sleeps, fn = Sleeps(), Flaky(OSError("one"), OSError("two"), OSError("three"))
    with pytest.raises(OSError, match="two"):
        retrying("op", attempts=2, sleep=sleeps).call(fn)
    assert fn.calls == 2 and len(sleeps) == 1


def test_one_attempt_means_no_retry() -> None:
    fn = Flaky(OSError("one"))
    with pytest.raises(OSError, match="one"):
        retrying("op", attempts=1, sleep=Sleeps()).call(fn)
    assert fn.calls == 1
    with pytest.raises(ValueError):
        retrying("op", attempts=0)


def test_the_deadline_counts_from_the_call_and_raises_the_last_failure() -> None:
    clock = [100.0]
    sleeps = Sleeps(clock)
    fn = Flaky(*[OSError(f"no {i}") for i in range(100)])
    with pytest.raises(OSError, match="no 4"):
        retrying("op", deadline_s=2.0, first_s=0.5, max_s=0.5, jitter=0, sleep=sleeps,
                 clock=lambda: clock[0]).call(fn)
    # Attempts at 0, 0.5, 1.0, 1.5 and 2.0 s: the one at the deadline is the last.
    assert fn.calls == 5 and clock[0] == pytest.approx(102.0)


def test_a_set_event_stops_retrying_even_mid_wait() -> None:
    stop = threading.Event()
    fn = Flaky(*[OSError("down")] * 10)
    stop.set()  # the wait returns at once, as when the event is set during it
    with pytest.raises(Stopped):
        retrying("op", until=stop, first_s=60).call(fn)
    assert fn.calls == 1  # no attempt after the stop


def test_an_unset_event_waits_on_the_event() -> None:
    waits: list[float | None] = []

    class Recording(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            return False

    fn = Flaky(OSError("a"), OSError("b"))
    assert retrying("op", until=Recording(), jitter=0).call(fn) == 3
    assert waits == pytest.approx([0.1, 0.2])


def test_each_failure_is_logged_once_with_its_reason_and_the_recovery_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tests.retry")
    fn = Flaky(ConnectionError("refused"), TimeoutError("slow"))
    with caplog.at_level(logging.DEBUG, logger="tests.retry"):
        retrying("Redis write", sleep=Sleeps(), logger=logger).call(fn)
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(records) == 3
    assert records[0][0] == logging.WARNING
    assert records[0][1].startswith("Redis write failed (ConnectionError: refused); retrying in")
    assert "TimeoutError: slow" in records[1][1]
    assert records[2] == (logging.INFO, "Redis write succeeded after 2 failed attempts")


def test_the_level_of_the_failure_lines_can_be_lowered(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.retry")
    with caplog.at_level(logging.DEBUG, logger="tests.retry"):
        retrying("queue", sleep=Sleeps(), logger=logger, level=logging.DEBUG).call(
            Flaky(BufferError("full")))
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}


def test_as_a_decorator_every_call_is_retried_on_its_own() -> None:
    sleeps = Sleeps()
    fn = Flaky(OSError("a"))
    wrapped: Callable[..., Any] = retrying("op", sleep=sleeps, attempts=2)(fn)
    assert wrapped("x") == 2
    fn.errors = [OSError("b")]
    assert wrapped("y") == 4  # a fresh budget of attempts
    assert len(sleeps) == 2 and fn.args == (("y",), {})


def test_concurrent_calls_do_not_share_their_state() -> None:
    retry = retrying("op", attempts=3, sleep=Sleeps())
    results: list[Any] = []

    def run() -> None:
        results.append(retry.call(Flaky(OSError("a"), OSError("b"))))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [3] * 8
