"""Waiting longer after each failure: the one doubling backoff, and an outage that uses it.

:class:`Backoff` is the rule alone (pure): the daemon's outages and observer restarts, and
`imgwatch run`'s worker and queue server restarts, all wait by it. :class:`Outage` adds what
the daemon does while a dependency fails: one warning when it starts, one info line when it
ends, and attempts allowed only once the backoff has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from imgwatch.log import get_logger

log = get_logger("imgwatch.backoff")


class Backoff:
    """A delay that doubles with each failure, from ``first`` up to ``most``, until :meth:`reset`."""

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self._next = first

    def next_delay(self) -> float:
        """The delay to wait now; the next call's is twice as long (at most ``most``)."""
        delay = self._next
        self._next = min(delay * 2, self.most)
        return delay

    def reset(self) -> None:
        """A success (or a long enough stable stretch): the next failure waits ``first`` again."""
        self._next = self.first


class Outage:
    """One dependency while it fails: a warning when it starts, an info line when it ends.

    While it lasts, :meth:`ready` allows an attempt only after a backoff that doubles
    from ``first_delay`` up to ``max_delay``.
    """

    def __init__(self, name: str, *, first_delay: float, max_delay: float,
                 clock: Callable[[], float] = time.monotonic, events: tuple[str, str] | None = None) -> None:
        self.name = name
        # What is logged when it starts and ends: "<name>_unreachable" and "<name>_back" by default.
        self.start_event, self.end_event = events or (f"{name}_unreachable", f"{name}_back")
        self._backoff = Backoff(first_delay, max_delay)
        self._clock = clock
        self._since: float | None = None
        self._next_attempt = 0.0
        self.failures = 0

    @property
    def active(self) -> bool:
        return self._since is not None

    def ready(self) -> bool:
        return self._since is None or self._clock() >= self._next_attempt

    def failed(self, error: BaseException, **context: Any) -> None:
        now = self._clock()
        if self._since is None:
            self._since, self.failures = now, 0
            self._backoff.reset()
            log.warning(self.start_event, error=str(error) or type(error).__name__, **context,
                        note=f"holding work; retrying with backoff up to {self._backoff.most:g} s")
        self.failures += 1
        self._next_attempt = now + self._backoff.next_delay()

    def ended(self, **context: Any) -> bool:
        """Call after a success; True when that ended an outage (logged)."""
        if self._since is None:
            return False
        seconds = self._clock() - self._since
        log.info(self.end_event, seconds=round(seconds, 1), failed_attempts=self.failures, **context)
        self._since = None
        return True
