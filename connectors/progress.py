"""Progress of long command-line work (catalog load, replay): a bar or plain log lines.

On a terminal a tqdm bar redraws in place on stderr. Anywhere else (a log file, `docker compose
logs`, CI) a bar's carriage returns turn into noise, so a line with what is done, the rate and the
time left is logged every few seconds instead, and a summary line at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger("cartstream.progress")


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class Progress:
    """Counts units done toward a known total (0 = unknown) and shows it one of two ways.

    `enabled=False` shows nothing (--quiet). `every_s` is the gap between plain lines.
    """

    def __init__(self, desc: str, total: int, unit: str = "records", *, enabled: bool = True,
                 stream: TextIO | None = None, every_s: float = 5.0,
                 emit: Callable[[str], None] | None = None) -> None:
        self.desc, self.total, self.unit, self.every_s = desc, total, unit, every_s
        self.done = 0
        self.note = ""
        self._emit = emit or log.info
        self._start = self._last = time.monotonic()
        stream = stream or sys.stderr
        self._bar: tqdm | None = None
        self._lines = False
        if enabled and stream.isatty():
            self._bar = tqdm(total=total or None, desc=desc, unit=unit[:3], file=stream,
                             unit_scale=True)
        elif enabled:
            self._lines = True

    def update(self, n: int) -> None:
        """`n` more units done."""
        self.set(self.done + n)

    def set(self, done: int, note: str = "") -> None:
        """`done` units done so far; `note` is shown beside the count (e.g. what is left)."""
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(done - self.done)
        self.done, self.note = done, note
        now = time.monotonic()
        if self._lines and now - self._last >= self.every_s:
            self._last = now
            self._emit(self.line(now))

    def line(self, now: float | None = None) -> str:
        """`desc: done/total unit (pct), rate/s, ETA m:ss [note]` for the log."""
        elapsed = (now or time.monotonic()) - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f}/s"
        if self.total and rate > 0:
            text += f", ETA {_duration(max(self.total - self.done, 0) / rate)}"
        return f"{text}, {self.note}" if self.note else text

    def close(self) -> None:
        """Close the bar, or log the summary line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._lines:
            self._lines = False
            elapsed = time.monotonic() - self._start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            self._emit(f"{self.desc}: done, {self.done:,} {self.unit} in "
                       f"{_duration(elapsed)} ({rate:,.0f}/s)")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
