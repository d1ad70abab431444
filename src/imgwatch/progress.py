"""Progress on a terminal: done / total, rate and time left while work is queued (or a reindex runs).

The queue only knows what is pending now, so the tracker turns successive samples of
"paths pending" into progress: a drop is work done, a rise is new work joining the
backlog. Off a terminal (systemd, pipes) nothing is drawn; the logs say it all.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

# The rate is averaged over this window, so a pause (or a burst) fades out in a minute.
RATE_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    rate: float | None  # paths per second; None until something was done
    seconds_left: float | None

    @property
    def pending(self) -> int:
        return self.total - self.done


class CountTracker:
    """Progress towards a total, from samples of how much is done (and of the total, which may grow)."""

    def __init__(self) -> None:
        self._history: list[tuple[float, int]] = []  # (time, done) within the rate window

    def update(self, done: int, total: int, now: float) -> Progress:
        self._history.append((now, done))
        while len(self._history) > 2 and now - self._history[0][0] > RATE_WINDOW_SECONDS:
            self._history.pop(0)
        rate = None
        first_time, first_done = self._history[0]
        if now > first_time and done > first_done:
            rate = (done - first_done) / (now - first_time)
        left = max(0, total - done)
        return Progress(done, total, rate, left / rate if rate else None)

    def clear(self) -> None:
        self._history.clear()


class BacklogTracker:
    """Progress of one backlog, from samples of how many paths are pending."""

    def __init__(self) -> None:
        self._done = 0
        self._pending = 0
        self._counts = CountTracker()

    def update(self, pending: int, now: float) -> Progress:
        if pending < self._pending:
            self._done += self._pending - pending
        self._pending = pending
        if pending == 0:  # the backlog is over: the next one starts from zero
            self._done = 0
            self._counts.clear()
            return Progress(0, 0, None, None)
        return self._counts.update(self._done, self._done + pending, now)


def render(progress: Progress, width: int = 30, unit: str = "paths") -> str:
    """One terminal line, e.g. ``[#####.....] 120/480 paths  4.1/s  1m 28s left``."""
    filled = width * progress.done // progress.total if progress.total else 0
    bar = "#" * min(width, filled) + "." * max(0, width - filled)
    rate = f"{progress.rate:.1f}/s" if progress.rate else "-/s"
    left = _duration(progress.seconds_left) + " left" if progress.seconds_left is not None else "estimating"
    return f"[{bar}] {progress.done}/{progress.total} {unit}  {rate}  {left}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


class TerminalProgress:
    """Redraws one progress line on a terminal while there is a backlog; silent elsewhere."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.tracker = BacklogTracker()
        self._shown = False

    def show(self, pending: int, now: float | None = None) -> Progress:
        return self.draw(self.tracker.update(pending, time.monotonic() if now is None else now))

    def draw(self, progress: Progress, unit: str = "paths") -> Progress:
        """Redraw the line with ``progress`` (none while its total is 0)."""
        if not self.enabled:
            return progress
        if progress.total:
            self.stream.write("\r\x1b[2K" + render(progress, unit=unit))
            self._shown = True
        elif self._shown:
            self.stream.write("\r\x1b[2K")
            self._shown = False
        self.stream.flush()
        return progress

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()


def follow_backlog(pending: Callable[[], int], *, interval: float = 1.0, stream: TextIO | None = None,
                   until_empty: bool = True, stop: Callable[[], bool] = lambda: False) -> None:
    """Show progress of ``pending()`` every ``interval`` s until it is empty (or ``stop()``)."""
    display = TerminalProgress(stream)
    try:
        while not stop():
            if display.show(pending()).total == 0 and until_empty:
                return
            time.sleep(interval)
    finally:
        display.close()


def follow_count(sample: Callable[[], tuple[int, int] | None], *, unit: str, interval: float = 1.0,
                 stream: TextIO | None = None) -> None:
    """Show progress of ``sample()``, (done, total), every ``interval`` s until it returns None."""
    display = TerminalProgress(stream)
    tracker = CountTracker()
    try:
        while (counts := sample()) is not None:
            display.draw(tracker.update(*counts, time.monotonic()), unit)
            time.sleep(interval)
    finally:
        display.close()
