"""The daemon: watch, settle and enqueue until stopped; rescan whatever may have been missed.

A rescan is a reconciliation of a root: walk it and compare with the store (cheap:
no file is read). Every root is rescanned on start, every ``watch.rescan_seconds``
(0: never), and when the queue is back from an outage (a queue server that died may
have lost its last second of writes: appendfsync everysec). One root is rescanned
at once when its watcher lost events (an inotify queue overflow) and when it is back
after vanishing; every root when the observer had to be restarted because one of
its threads died.

The queue (Redis) or the store may be unreachable for a while. Settled paths are then
held, removed folders and rescans kept pending, and the failed step is retried with
backoff (0.25 s doubling to 30 s). Each outage is one warning when it starts and one
info line when it ends, with how long it lasted and how many paths were held.

This module is the loop. What it drives lives beside it: the roots' health and the observer
(daemon.roots), one rescan (daemon.scan, also `imgwatch scan`'s), the move pairing rules
(daemon.moves), events into settled paths (daemon.watcher, daemon.settler).
"""

from __future__ import annotations

import math
import threading
import time

import redis
from watchdog.observers.api import BaseObserver, ObservedWatch

from imgwatch.backoff import Backoff, Outage
from imgwatch.config import Config, ConfigError
from imgwatch.daemon.moves import at_or_below, moves_not_covered
from imgwatch.daemon.reconcile import StoredFileStates
from imgwatch.daemon.roots import Announcement, WatchedRoots
from imgwatch.daemon.scan import GuardedStates, StoreReadError, enqueue_backlog, reconcile_and_enqueue
from imgwatch.daemon.settler import Settler
from imgwatch.daemon.watcher import EventRouter
from imgwatch.files import PathFilter, root_of
from imgwatch.log import get_logger
from imgwatch.workqueue import FailureLedger, WorkQueue, queue_is_idle

log = get_logger("imgwatch.daemon")

POLL_SECONDS = 0.25
ROOT_CHECK_SECONDS = 2.0  # also how often the observer's threads are checked and an idle queue is pinged
# Settled paths wait this long for company before going out in a partial batch while the
# workers are busy: a folder being copied in then becomes a few full jobs, not many tiny
# ones. With the queue idle they go out at once: waiting would only delay them.
LINGER_SECONDS = 1.0
BACKOFF_FIRST_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 30.0
# A root whose watcher keeps losing events (a long copy into a busy machine) is rescanned at
# once the first time, then at most this often for that reason.
LOST_EVENTS_RESCAN_GAP_SECONDS = 5.0
EVENTS_LOST = "events_lost"


class Daemon:
    """Reads the store's file states and the failure ledger; writes only to the work queue."""

    def __init__(
        self, config: Config, stored: StoredFileStates, failures: FailureLedger, work_queue: WorkQueue
    ) -> None:
        if not config.general.roots:
            raise ConfigError("no folders to watch: pass ROOT arguments or set general.roots")
        self.config = config
        self.stored = stored
        self.failures = failures
        self.work_queue = work_queue
        self.roots = [str(p) for p in config.root_paths]
        close_events = config.watch.observer == "inotify"
        self.settler = Settler(config.watch.settle_seconds, close_events=close_events)
        self.router = EventRouter(
            self.settler, PathFilter.create(config.watch.extensions, config.watch.exclude), self.roots
        )
        self.watching = threading.Event()  # set once every root is watched
        self.root_check_seconds = ROOT_CHECK_SECONDS
        self._unsent: dict[str, None] = {}  # settled paths, in order, held across queue outages
        self._unsent_since = 0.0
        self._removed_dirs: list[str] = []  # folders gone, still to be turned into their stored paths
        self._unsent_moves: list[tuple[str, str]] = []  # (old, new) moved within the roots, held across outages
        self._rescans: dict[str, set[str]] = {}  # root → why it must be rescanned
        self._last_lost_rescan: dict[str, float] = {}  # when each root was last rescanned for lost events
        self._queue = _outage("queue")
        self._store = _outage("store")
        # Walking a root failed (an I/O error on a flaky share): per root, so one cannot block the others.
        self._unreadable = {root: _outage(root, events=("root_unreadable", "root_readable")) for root in self.roots}
        # A restart of the observer waits for a root check; one that keeps dying waits longer.
        self._watched = WatchedRoots(config, self.router, request_rescan=self.request_rescan,
                                     restart_backoff=Backoff(ROOT_CHECK_SECONDS, BACKOFF_MAX_SECONDS))
        self._announcement = Announcement(work_queue)  # each root's state, for `imgwatch status`

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        # Watch first, then reconcile: a file that changes during the scan is caught by one or the other.
        present = self._watched.start()
        log.info("watching", roots=self.roots, observer=self.config.watch.observer,
                 settle_seconds=self.config.watch.settle_seconds, rescan_seconds=self.config.watch.rescan_seconds)
        self.watching.set()
        self._publish_root_states()
        self.request_rescan(present, "start")  # a missing root is rescanned once it appears (root_back)
        rescan_every = self.config.watch.rescan_seconds
        now = time.monotonic()
        next_root_check = now + self.root_check_seconds
        next_periodic = now + rescan_every if rescan_every > 0 else math.inf
        try:
            while True:
                self.tick()
                if stop.wait(POLL_SECONDS):
                    break
                now = time.monotonic()
                if now >= next_root_check:
                    self._watched.check()
                    self._probe_queue()
                    self._publish_root_states()
                    next_root_check = now + self.root_check_seconds
                if now >= next_periodic:
                    self._watched.retry_folders_not_watched()
                    self.request_rescan(self.roots, "periodic")
                    next_periodic = now + rescan_every
            # Last chance for held paths; during an outage this does not wait for the backoff.
            self._collect()
            self._send_moves()
            self._send(flush=True)
        finally:
            self._watched.stop()
            self._announcement.withdraw()
            if self._unsent or len(self.settler) or self._rescans or self._removed_dirs or self._unsent_moves:
                log.warning("stopping_with_pending", unsent=len(self._unsent), unsettled=len(self.settler),
                            moves=len(self._unsent_moves),
                            rescans=len(self._rescans), note="the next start reconciles them")

    def tick(self, flush: bool = False) -> None:
        """Move settled paths onto the queue and run the rescans that are due."""
        self._take_notices()
        self._collect()
        self._send_moves()  # before the paths: an index job for a moved path then finds it renamed
        self._send(flush)
        self._run_rescans()

    @property
    def unsent(self) -> list[str]:
        """Settled paths not on the queue yet (held while the queue is unreachable)."""
        return list(self._unsent)

    @property
    def observer(self) -> BaseObserver | None:
        return self._watched.observer

    @property
    def watches(self) -> dict[str, ObservedWatch]:
        return dict(self._watched.watches)

    def request_rescan(self, roots: list[str] | None = None, reason: str = "requested") -> None:
        """Reconcile ``roots`` (default: all) at the next tick."""
        for root in self.roots if roots is None else roots:
            self._rescans.setdefault(root, set()).add(reason)

    # -- settled paths and removed folders → the queue -------------------------------------

    def _collect(self) -> None:
        ready = self.settler.due()
        self._removed_dirs.extend(self.router.take_removed_dirs())
        self._unsent_moves.extend(self.router.take_moves())
        if self._unsent_moves:  # a move job indexes its old side itself, after renaming it
            moved_from = {old for old, _ in self._unsent_moves}
            ready = [p for p in ready if not at_or_below(p, moved_from)]
        if self._removed_dirs and self._queue.ready() and self._store.ready():
            ready.extend(self._expand_removed_dirs())
        ready = [p for p in ready if not self._watched.below_missing_root(p)]
        if ready and not self._unsent:
            self._unsent_since = time.monotonic()
        self._unsent.update(dict.fromkeys(ready))

    def _expand_removed_dirs(self) -> list[str]:
        """The stored images and failure records below removed folders; [] while that cannot be read."""
        dirs = self._removed_dirs
        try:
            failed = [f.path for f in self.failures.failed_files()]
        except redis.RedisError as exc:
            self._queue.failed(exc, held=len(self._unsent))
            return []
        try:
            below = [state.path for directory in dirs for state in GuardedStates(self.stored).file_states(directory)]
        except StoreReadError as exc:
            self._store.failed(exc)
            return []
        self._queue_ok()
        self._store.ended()
        self._removed_dirs = []
        return below + [p for p in failed if root_of(p, dirs)]

    def _send(self, flush: bool) -> None:
        if not self._unsent:
            return
        lingered = time.monotonic() - self._unsent_since >= LINGER_SECONDS
        if not self._queue.ready():
            return
        if not (flush or lingered or len(self._unsent) >= self.config.watch.batch_size or self._queue_idle()):
            return
        paths = list(self._unsent)
        try:
            enqueue_backlog(self.work_queue, paths, self.config)
        except redis.RedisError as exc:
            self._queue.failed(exc, held=len(paths))
            return
        self._unsent.clear()
        log.info("enqueued", paths=len(paths))
        self._queue_ok(held=len(paths))

    def _queue_idle(self) -> bool:
        try:
            return queue_is_idle(self.work_queue)
        except redis.RedisError as exc:
            self._queue.failed(exc, held=len(self._unsent))
            return False

    def _send_moves(self) -> None:
        """Files and folders moved within the roots → move jobs, as soon as the queue takes them."""
        if not self._unsent_moves or not self._queue.ready():
            return
        moves = moves_not_covered(self._unsent_moves)
        try:
            self.work_queue.enqueue_moves(moves)
        except redis.RedisError as exc:
            self._queue.failed(exc, held=len(self._unsent))
            return
        self._unsent_moves = []
        log.info("enqueued_moves", moves=len(moves))
        self._queue_ok()

    def _queue_ok(self, held: int | None = None) -> None:
        if self._queue.ended(held_paths=len(self._unsent) if held is None else held):
            # The server may have lost its last writes (or jobs died with it): look again.
            self.request_rescan(self.roots, "queue_back")

    def _probe_queue(self) -> None:
        """Notice an outage (and its end) while idle: the rescan after it needs to know."""
        if not self._queue.ready():
            return
        try:
            self.work_queue.connection.ping()
        except redis.RedisError as exc:
            self._queue.failed(exc, held=len(self._unsent))
            return
        self._queue_ok()

    # -- rescans --------------------------------------------------------------------------

    def _run_rescans(self) -> None:
        if not self._rescans:
            return
        throttled_until = time.monotonic() - LOST_EVENTS_RESCAN_GAP_SECONDS
        due = [root for root, reasons in self._rescans.items()
               if reasons != {EVENTS_LOST} or self._last_lost_rescan.get(root, -math.inf) <= throttled_until]
        due = [root for root in due if self._unreadable[root].ready()]
        if not due:
            return
        exclude = self.settler.pending_paths() | set(self._unsent)
        for root in due:  # one at a time: a root that cannot be read does not hold up the others
            if not (self._queue.ready() and self._store.ready()):
                return
            try:
                reconcile_and_enqueue(self.config, GuardedStates(self.stored), self.failures, self.work_queue,
                                      [root], reason=",".join(sorted(self._rescans[root])), exclude=exclude)
            except redis.RedisError as exc:
                self._queue.failed(exc, held=len(self._unsent))
                return
            except StoreReadError as exc:
                self._store.failed(exc)
                return
            except OSError as exc:
                self._unreadable[root].failed(exc, root=root)
                continue
            if EVENTS_LOST in self._rescans.pop(root):
                self._last_lost_rescan[root] = time.monotonic()
            self._queue_ok()
            self._store.ended()
            self._unreadable[root].ended(root=root)

    # -- the watcher's notices, the roots' states ------------------------------------------

    def _take_notices(self) -> None:
        for root in self.router.take_lost_roots():
            self.settler.close_events_lost(root)
            if EVENTS_LOST not in self._rescans.get(root, ()):
                log.warning("events_lost", root=root, note="the watcher's event queue overflowed "
                            "(fs.inotify.max_queued_events); rescanning the root")
            self.request_rescan([root], EVENTS_LOST)
        self._watched.folders_not_watched(self.router.take_unwatchable())

    def _publish_root_states(self) -> None:
        """Publish the roots' states when they changed, and renew them before they expire."""
        states = self._watched.states()
        if not self._announcement.due(states) or not self._queue.ready():
            return
        try:
            self._announcement.publish(states)
        except redis.RedisError as exc:
            self._queue.failed(exc, held=len(self._unsent))
            return
        self._queue_ok()


def _outage(name: str, events: tuple[str, str] | None = None) -> Outage:
    return Outage(name, first_delay=BACKOFF_FIRST_SECONDS, max_delay=BACKOFF_MAX_SECONDS, events=events)

