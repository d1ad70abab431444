"""When `imgwatch run` starts a dead worker, or its dead queue server, again: the rule alone.

Each worker waits RESTART_DELAY_MIN_SECONDS seconds before it is started again, doubling up to
RESTART_DELAY_MAX_SECONDS with each death, and back to the minimum once it stayed up STABLE_SECONDS.
CRASH_LOOP_DEATHS crashes of any workers within CRASH_LOOP_SECONDS are a crash loop: every
restart waits RESTART_DELAY_MAX_SECONDS until fewer crashes fall within that window again. A worker that
stopped because the queue or the store was out of reach backs off too, but is no sign of a crash
loop. A queue server that cannot be restarted is tried again after RESTART_DELAY_MIN_SECONDS, doubling up
to QUEUE_RESTART_DELAY_MAX_SECONDS.

No processes here (imgwatch.supervisor runs them), and the clock is injectable, like the
daemon's Settler: the rule is tested on its own.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from imgwatch.backoff import Backoff

RESTART_DELAY_MIN_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 60.0
STABLE_SECONDS = 60.0  # a worker up this long before it died restarts after RESTART_DELAY_MIN_SECONDS again
CRASH_LOOP_DEATHS = 5
CRASH_LOOP_SECONDS = 300.0
QUEUE_RESTART_DELAY_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class Restart:
    """What follows a worker's death."""

    delay: float  # seconds before it is started again
    uptime: float  # seconds it had been up
    crash_loop_began: bool  # this death began a crash loop (so it is reported once)


class RestartPolicy:
    """Restart delays for ``workers`` worker slots (0 to workers - 1) and the queue server."""

    def __init__(self, workers: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._backoffs = [Backoff(RESTART_DELAY_MIN_SECONDS, RESTART_DELAY_MAX_SECONDS) for _ in range(workers)]
        self._started_at = [clock()] * workers
        self._crashes: collections.deque[float] = collections.deque()  # crash times, all workers
        self.crash_loop = False
        self._queue_server = Backoff(RESTART_DELAY_MIN_SECONDS, QUEUE_RESTART_DELAY_MAX_SECONDS)

    @property
    def recent_crashes(self) -> int:
        """The crashes that fell within CRASH_LOOP_SECONDS at the last death."""
        return len(self._crashes)

    def started(self, worker: int) -> None:
        self._started_at[worker] = self._clock()

    def died(self, worker: int, *, crashed: bool = True) -> Restart:
        """``worker`` died; ``crashed=False``: it stopped because the queue or the store was out of reach."""
        now = self._clock()
        uptime = now - self._started_at[worker]
        backoff = self._backoffs[worker]
        if uptime >= STABLE_SECONDS:
            backoff.reset()
        delay = backoff.next_delay()
        if crashed:
            self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > CRASH_LOOP_SECONDS:
            self._crashes.popleft()
        began = False
        if len(self._crashes) >= CRASH_LOOP_DEATHS:
            delay = RESTART_DELAY_MAX_SECONDS
            began, self.crash_loop = not self.crash_loop, True
        else:
            self.crash_loop = False
        return Restart(delay, uptime, began)

    def queue_server_retry_delay(self) -> float:
        """A restart of the queue server failed: seconds before the next try."""
        return self._queue_server.next_delay()

    def queue_server_back(self) -> None:
        self._queue_server.reset()
