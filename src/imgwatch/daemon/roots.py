"""The roots' health and the observer that watches them, for the daemon's loop.

A root may be missing (a typo, a share not mounted yet), vanish and come back (or be
replaced), or be there but not watchable (the inotify watch limit); one of the observer's
threads may die. :class:`WatchedRoots` notices each at the daemon's root checks, watches
again what it can, and asks the daemon to rescan what may have been missed meanwhile. While a
root is missing, removals below it are held back: an unmounted share must not empty the index.

Each root's state is what `imgwatch status` shows: :class:`Announcement` publishes it on the
queue (workqueue.root_states) when it changes, renewed before it expires.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import stat
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TextIO

import redis
from watchdog.observers.api import BaseObserver, ObservedWatch

from imgwatch.backoff import Backoff
from imgwatch.config import Config
from imgwatch.daemon.notices import watch_limit_advice
from imgwatch.daemon.watcher import (
    EventRouter,
    explain_watch_error,
    make_observer,
    observer_trouble,
    start_observer,
    stop_observer,
)
from imgwatch.errors import printable
from imgwatch.files import root_of
from imgwatch.log import get_logger
from imgwatch.workqueue import WorkQueue
from imgwatch.workqueue.announcements import RENEW_SECONDS
from imgwatch.workqueue.root_states import (
    MISSING,
    NOT_WATCHABLE,
    POLLING,
    WATCHING,
    RootState,
    RootStates,
)

log = get_logger("imgwatch.daemon")

# An observer that dies again within this long after a restart is restarted later and later.
RESTART_BACKOFF_WINDOW_SECONDS = 60.0
# What a missing root's state says (imgwatch status): why nothing happens there, and what to do if it is a typo.
MISSING_ROOT_DETAIL = ("not there: watched and indexed once it appears, what is stored below it stays "
                       "(if the path is wrong, fix `general.roots` or the ROOT argument)")


def tell_the_terminal(message: str, stream: TextIO | None = None) -> None:
    """``message`` as one plain line for the person at a terminal. Elsewhere (the journal, a pipe)
    nothing: the structured log line beside it says the same to whoever reads the logs."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        stream.write("\r\x1b[2K" + printable(message) + "\n")  # a progress bar may own the line
        stream.flush()


class WatchedRoots:
    """The observer and each root's state: present or missing, watched or not, and why.

    ``request_rescan(roots, reason)`` is called for roots that may have changed unseen (back,
    watched again, a new observer). ``restart_backoff`` spaces out restarts of an observer
    that keeps dying.
    """

    def __init__(self, config: Config, router: EventRouter, *,
                 request_rescan: Callable[[list[str], str], None], restart_backoff: Backoff) -> None:
        self.config = config
        self.router = router
        self.roots = [str(p) for p in config.root_paths]
        self._request_rescan = request_rescan
        self.observer: BaseObserver | None = None
        self.watches: dict[str, ObservedWatch] = {}
        # Each root's (st_dev, st_ino) as watched; None while it is missing.
        self._root_ids: dict[str, tuple[int, int] | None] = {}
        self._unwatched: dict[str, str] = {}  # present roots that could not be watched → why
        self._watch_limit_reported = False
        self._unwatchable_below: Counter[str] = Counter()  # root → folders below it that could not be watched
        self._restart_backoff = restart_backoff
        self._last_restart = -math.inf
        self._next_restart = 0.0

    def start(self) -> list[str]:
        """Watch every root that is there (returned); a missing one is said, and watched once it appears."""
        try:
            observer = make_observer(self.config.watch.observer, self.config.watch.polling_interval)
        except OSError as exc:  # e.g. too many inotify instances
            raise explain_watch_error(exc, ", ".join(self.roots)) from None
        # A root missing at start (a share not mounted yet) is no error: it is watched once it appears.
        self._root_ids = {root: _dir_identity(root) for root in self.roots}
        missing = [root for root in self.roots if self._root_ids[root] is None and not os.path.exists(root)]
        for root in missing:
            log.warning("root_missing", root=root,
                        note="not there at start: watched and indexed once it appears "
                             "(if the path is wrong, fix `general.roots` or the ROOT argument)")
            tell_the_terminal(f"imgwatch: {root} does not exist: it is watched once it appears; if the path is "
                              "mistyped, stop imgwatch (Ctrl-C) and fix the ROOT argument or general.roots")
        present = [root for root in self.roots if root not in missing]  # a file there fails in start_observer
        self.watches = start_observer(observer, self.router, present)
        self.observer = observer
        return present

    def stop(self) -> None:
        if self.observer is not None:
            stop_observer(self.observer)

    def check(self) -> None:
        """Notice roots that vanished (an unmounted share), came back or were replaced, and dead watchers.

        When a root is back, it is watched again and rescanned. When one of the observer's
        threads died, a new observer watches every root and all are rescanned.
        """
        for root in self.roots:
            identity = _dir_identity(root)
            known = self._root_ids.get(root)
            if identity == known and root not in self._unwatched:
                continue
            if identity is None:
                self._root_ids[root] = None
                self._unwatched.pop(root, None)
                log.warning("root_missing", root=root, note="holding removals below it until it is back")
                continue
            # Back (or replaced), or present but not watched yet: it counts as back once it is watched.
            if self.observer is not None and self._watch_root(root):
                came_back = identity != known
                self._root_ids[root] = identity
                log.info("root_back" if came_back else "root_watched", root=root)
                self._request_rescan([root], "root_back" if came_back else "watched_again")
        self._check_observer()

    def folders_not_watched(self, folders: Iterable[str]) -> None:
        """The watcher could not add a watch for ``folders`` (the inotify watch limit)."""
        for folder in folders:
            self._unwatchable_below[root_of(folder, self.roots) or folder] += 1
            if not self._watch_limit_reported:
                self._watch_limit_reported = True
                log.error("watch_limit_reached", folder=folder,
                          note=f"the inotify watch limit is reached: this and further new folders are not watched; "
                               f"{watch_limit_advice()}; until then only rescans (watch.rescan_seconds) find "
                               "files there. Reported once.")
            if folder in self.roots:  # its watches could not be rebuilt (after an overflow): watch it again
                self._unwatched[folder] = f"the inotify watch limit is reached; {watch_limit_advice()}"

    def retry_folders_not_watched(self) -> None:
        """Watch again the folders that could not be watched: the limit may have been raised since."""
        if self._unwatchable_below:
            self._restart_observer(f"{self._unwatchable_below.total()} folder(s) could not be watched", died=False)

    def below_missing_root(self, path: str) -> bool:
        root = root_of(path, self.roots)
        return root in self._root_ids and self._root_ids[root] is None

    def states(self) -> list[RootState]:
        """Each root as it is watched now."""
        states = []
        for root in self.roots:
            if root in self._unwatched:  # there (perhaps back from missing), but no watch could be added
                states.append(RootState(root, NOT_WATCHABLE, self._unwatched[root] +
                                        "; until then only rescans (watch.rescan_seconds) find changes there"))
            elif self._root_ids.get(root) is None:
                states.append(RootState(root, MISSING, MISSING_ROOT_DETAIL))
            elif root not in self.watches:  # the observer could not be restarted yet
                states.append(RootState(root, NOT_WATCHABLE, "the watcher is not running; retried every few seconds"))
            else:
                below = self._unwatchable_below[root]
                detail = (f"{below} folder(s) below it could not be watched: the inotify watch limit is reached; "
                          f"{watch_limit_advice()}") if below else ""
                states.append(RootState(root, POLLING if self.config.watch.observer == "polling" else WATCHING,
                                        detail))
        return states

    def _watch_root(self, root: str) -> bool:
        """(Re)schedule ``root`` on the observer; False when it cannot be watched (logged once)."""
        assert self.observer is not None
        old = self.watches.pop(root, None)
        if old is not None:
            with contextlib.suppress(KeyError, OSError):
                self.observer.unschedule(old)
        self._unwatchable_below.pop(root, None)  # a new watch: its folders that fail are reported anew
        try:
            self.watches[root] = self.observer.schedule(self.router, root, recursive=True)
        except OSError as exc:
            message = str(explain_watch_error(exc, root))
            if self._unwatched.get(root) != message:
                log.error("root_unwatchable", root=root, error=message,
                          note="retried every few seconds; reported again only if the reason changes")
            self._unwatched[root] = message
            return False
        self._unwatched.pop(root, None)
        return True

    def _check_observer(self) -> None:
        present = {root: watch for root, watch in self.watches.items()
                   if self._root_ids.get(root) is not None and root not in self._unwatched}
        trouble = "no observer" if self.observer is None else observer_trouble(self.observer, present)
        if trouble is None or time.monotonic() < self._next_restart:
            return
        self._restart_observer(trouble)

    def _restart_observer(self, trouble: str, *, died: bool = True) -> None:
        """A new observer watching every present root, which are then rescanned."""
        self._unwatchable_below.clear()
        now = time.monotonic()
        if now - self._last_restart < RESTART_BACKOFF_WINDOW_SECONDS:
            delay = self._restart_backoff.next_delay()
        else:
            self._restart_backoff.reset()
            delay = 0.0
        self._last_restart = now
        self._next_restart = now + delay
        (log.error if died else log.info)("watcher_restarting", trouble=trouble,
                                          note="watching every root again and rescanning them")
        if self.observer is not None:
            with contextlib.suppress(Exception):  # its threads may be half dead; it is discarded anyway
                stop_observer(self.observer)
        self.observer, self.watches = None, {}
        observer = None
        try:
            observer = make_observer(self.config.watch.observer, self.config.watch.polling_interval)
            observer.start()  # no watches yet: a root that cannot be watched fails alone below
        except OSError as exc:
            if observer is not None:
                stop_observer(observer)
            log.error("watcher_unavailable", error=str(explain_watch_error(exc, ", ".join(self.roots))),
                      note="retried at the next check")
            return
        self.observer = observer
        present = [root for root in self.roots if self._root_ids.get(root) is not None]
        watched = [root for root in present if self._watch_root(root)]
        self._request_rescan(watched, "watcher_restarted")


class Announcement:
    """This daemon's roots' states as published for `imgwatch status`: again whenever they change,
    and renewed before they expire (workqueue.root_states)."""

    def __init__(self, work_queue: WorkQueue) -> None:
        self._root_states = RootStates.for_queue(work_queue)
        self._name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._published: list[RootState] | None = None
        self._published_at = -math.inf

    def due(self, states: list[RootState]) -> bool:
        """Whether ``states`` changed since they were last published, or are to be renewed."""
        return states != self._published or time.monotonic() - self._published_at >= RENEW_SECONDS

    def publish(self, states: list[RootState]) -> None:
        """Raises redis.RedisError when the queue is out of reach."""
        self._root_states.publish(self._name, states)
        self._published, self._published_at = states, time.monotonic()

    def withdraw(self) -> None:
        with contextlib.suppress(redis.RedisError):  # out of reach: the entry expires by itself
            self._root_states.withdraw(self._name)


def _dir_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
