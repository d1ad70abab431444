"""The folders each running worker indexes, announced on the queue's Redis.

A worker refuses paths outside its roots, so `imgwatch scan` of another folder would only
fill the failed-file list, and `imgwatch forget` of a folder a worker indexes would only be
undone: both read the announcements. Each worker's entry is a key that Redis expires (no
host's clock is trusted) and that a thread of the worker renews from before its model loads
until it stops; a set names the entries, and a name whose key expired (a killed worker) is
dropped by the next reader.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import redis

from imgwatch.errors import ConfigError
from imgwatch.files import root_of
from imgwatch.workqueue import announcements
from imgwatch.workqueue.announcements import Announcements

ANNOUNCEMENT_TTL_SECONDS = announcements.ENTRY_TTL_SECONDS  # seconds an entry outlives its worker's last renewal
RENEW_SECONDS = announcements.RENEW_SECONDS


class WorkerRoots(Announcements):
    """worker name → the roots it indexes, for as long as the worker keeps renewing it."""

    KIND = "worker-roots"

    @contextlib.contextmanager
    def announcing(self, worker: str, roots: Sequence[str]) -> Iterator[None]:
        """``worker`` indexes ``roots`` while inside: announced now, renewed by a thread, withdrawn at the end."""
        self.announce(worker, roots, ANNOUNCEMENT_TTL_SECONDS)
        stop = threading.Event()

        def renew_until_stopped() -> None:
            while not stop.wait(RENEW_SECONDS):
                with contextlib.suppress(redis.RedisError):  # the queue is down: the next renewal tries again
                    self.announce(worker, roots, ANNOUNCEMENT_TTL_SECONDS)

        renewer = threading.Thread(target=renew_until_stopped, name=f"announce-{worker}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=2)  # not stuck behind a renewal that waits out an outage
            with contextlib.suppress(redis.RedisError):  # out of reach: the entry expires by itself
                self.withdraw(worker)

    def announce(self, worker: str, roots: Sequence[str], ttl: int) -> None:
        """``worker`` indexes ``roots`` for the next ``ttl`` seconds (announce again to renew)."""
        self._put(worker, list(roots), ttl)

    def current(self) -> list[str]:
        """Every folder a running worker announced, sorted (empty when none is running)."""
        return sorted({root for roots in self._live_values() for root in roots})  # type: ignore[attr-defined]


def check_workers_take(folders: Sequence[str], announced: Sequence[str]) -> None:
    """ConfigError when running workers announced folders and none of them holds one of ``folders``."""
    if not announced:
        return  # no worker running (or none announced yet): nothing to check against
    outside = [folder for folder in folders if root_of(folder, announced) is None]
    if outside:
        raise ConfigError(
            f"cannot scan {', '.join(outside)}: the running workers index only files below "
            f"{', '.join(announced)} and refuse any other; scan those folders or folders inside them, or add it "
            "to general.roots (or to the folders given to `imgwatch run` / `imgwatch worker`) and restart them"
        )
