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
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import stat
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import redis
from watchdog.observers.api import BaseObserver, ObservedWatch

from imgwatch.config import Config, ConfigError
from imgwatch.daemon.notices import watch_limit_advice
from imgwatch.daemon.reconcile import KnownFailure, ReconcilePlan, StoredFileStates, reconcile_roots
from imgwatch.daemon.settler import Settler
from imgwatch.daemon.watcher import (
    EventRouter,
    explain_watch_error,
    make_observer,
    moved_along,
    observer_trouble,
    start_observer,
    stop_observer,
)
from imgwatch.errors import printable
from imgwatch.files import PathFilter, root_of
from imgwatch.log import get_logger
from imgwatch.store import FileState
from imgwatch.workqueue import FailureLedger, WorkQueue, queue_is_idle
from imgwatch.workqueue.jobs import INDEX_JOB, MOVE_JOB, job_paths, paths_per_job
from imgwatch.workqueue.root_states import (
    MISSING,
    NOT_WATCHABLE,
    POLLING,
    RENEW_SECONDS,
    WATCHING,
    RootState,
    RootStates,
)

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
# An observer that dies again within this long after a restart is restarted later and later.
RESTART_BACKOFF_WINDOW_SECONDS = 60.0

EVENTS_LOST = "events_lost"
# What a missing root's state says (imgwatch status): why nothing happens there, and what to do if it is a typo.
MISSING_ROOT_DETAIL = ("not there: watched and indexed once it appears, what is stored below it stays "
                       "(if the path is wrong, fix `general.roots` or the ROOT argument)")


class StoreReadError(Exception):
    """Reading the store failed; ``__cause__`` is the store's own error."""


class _GuardedStates:
    """The store's file states, with any read error raised as :class:`StoreReadError`.

    A rescan reads the ledger (the queue), the store and the disk: this tells a store
    outage from the others.
    """

    def __init__(self, stored: StoredFileStates) -> None:
        self._stored = stored

    def file_states(self, under: str | None = None) -> Iterator[FileState]:
        try:
            yield from self._stored.file_states(under=under)
        except Exception as exc:  # whatever the backend raises: SQLite, Neo4j, ...
            raise StoreReadError(f"{type(exc).__name__}: {exc}") from exc


class Outage:
    """One dependency while it fails: a warning when it starts, an info line when it ends.

    While it lasts, :meth:`ready` allows an attempt only after a backoff that doubles
    from ``first_delay`` up to ``max_delay``.
    """

    def __init__(self, name: str, *, first_delay: float = BACKOFF_FIRST_SECONDS,
                 max_delay: float = BACKOFF_MAX_SECONDS, clock: Callable[[], float] = time.monotonic,
                 events: tuple[str, str] | None = None) -> None:
        self.name = name
        # What is logged when it starts and ends: "<name>_unreachable" and "<name>_back" by default.
        self.start_event, self.end_event = events or (f"{name}_unreachable", f"{name}_back")
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._clock = clock
        self._since: float | None = None
        self._delay = 0.0
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
            self._since, self._delay, self.failures = now, self.first_delay, 0
            log.warning(self.start_event, error=str(error) or type(error).__name__, **context,
                        note=f"holding work; retrying with backoff up to {self.max_delay:g} s")
        else:
            self._delay = min(self._delay * 2, self.max_delay)
        self.failures += 1
        self._next_attempt = now + self._delay

    def ended(self, **context: Any) -> bool:
        """Call after a success; True when that ended an outage (logged)."""
        if self._since is None:
            return False
        seconds = self._clock() - self._since
        log.info(self.end_event, seconds=round(seconds, 1), failed_attempts=self.failures, **context)
        self._since = None
        return True


def tell_the_terminal(message: str, stream: TextIO | None = None) -> None:
    """``message`` as one plain line for the person at a terminal. Elsewhere (the journal, a pipe)
    nothing: the structured log line beside it says the same to whoever reads the logs."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        stream.write("\r\x1b[2K" + printable(message) + "\n")  # a progress bar may own the line
        stream.flush()


def known_failures(failures: FailureLedger, max_attempts: int) -> dict[str, KnownFailure]:
    """The ledger as reconciliation weighs it: which unchanged failed files are retried."""
    return {
        f.path: KnownFailure(f.size, f.mtime_ns, retry_unchanged=f.retry_due(max_attempts))
        for f in failures.failed_files()
    }


def enqueue_backlog(work_queue: WorkQueue, paths: list[str], config: Config) -> list[str]:
    """Queue ``paths`` as index jobs sized for the backlog they are (see paths_per_job)."""
    return work_queue.enqueue_paths(paths, paths_per_job(len(paths), config.watch.batch_size, config.workers.count))


@dataclass(frozen=True)
class Scanned:
    """What one reconciliation pass found, and how much of it went onto the queue."""

    plan: ReconcilePlan
    changed: int  # new or changed files enqueued
    gone: int  # stored images whose files are gone, enqueued
    already_queued: int  # changed or gone, but left out: a job waiting on the queue holds them already


def reconcile_and_enqueue(
    config: Config,
    stored: StoredFileStates,
    failures: FailureLedger,
    work_queue: WorkQueue,
    roots: list[str] | None = None,
    *,
    reason: str = "scan",
    exclude: Collection[str] = (),
) -> ReconcilePlan:
    """One reconciliation pass over ``roots`` (default: every root), as the daemon's rescans run it.

    A root that is not there (an unmounted share) is skipped, not emptied. Paths in
    ``exclude`` (the daemon's own pending work) are not enqueued.
    """
    return scan_and_enqueue(config, stored, failures, work_queue, roots, reason=reason, exclude=exclude).plan


def scan_and_enqueue(
    config: Config,
    stored: StoredFileStates,
    failures: FailureLedger,
    work_queue: WorkQueue,
    roots: list[str] | None = None,
    *,
    reason: str = "scan",
    exclude: Collection[str] = (),
    leave_queued: bool = False,
) -> Scanned:
    """:func:`reconcile_and_enqueue`, saying how much was enqueued. With ``leave_queued`` (what
    `imgwatch scan` runs) paths that a job waiting on the queue holds are not enqueued again: queued
    twice, a file would count twice in the backlog. They are read after the walk: a job still waiting
    then looks at its files after the walk saw them."""
    started = time.perf_counter()
    roots = [str(p) for p in config.root_paths] if roots is None else roots
    missing = [root for root in roots if not os.path.isdir(root)]
    for root in missing:
        log.warning("root_missing", root=root, note="not scanned: what is stored below it stays until it is there")
    roots = [root for root in roots if root not in missing]
    plan = reconcile_roots(
        roots,
        PathFilter.create(config.watch.extensions, config.watch.exclude),
        stored,
        known_failures(failures, config.workers.max_attempts),
    )
    waiting = waiting_paths(work_queue) if leave_queued and plan.paths else set()
    paths = [p for p in missed_moves_together(plan.changed, plan.gone) if p not in exclude and p not in waiting]
    jobs = enqueue_backlog(work_queue, paths, config)
    enqueued = set(paths)
    already_queued = sum(1 for p in plan.paths if p in waiting and p not in exclude)
    where = {"root": roots[0]} if len(roots) == 1 else {"roots": len(roots)}
    log.info("reconciled", reason=reason, **where, changed=len(plan.changed), gone=len(plan.gone),
             unchanged=plan.unchanged, known_failures=plan.known_failures,
             retried_failures=plan.retried_failures, pending=len(plan.paths) - len(paths) - already_queued,
             already_queued=already_queued, jobs=len(jobs), seconds=round(time.perf_counter() - started, 3))
    return Scanned(plan, sum(1 for p in plan.changed if p in enqueued), sum(1 for p in plan.gone if p in enqueued),
                   already_queued)


# Queued jobs read per round trip by waiting_paths.
_WAITING_JOBS_PER_READ = 1000


def waiting_paths(work_queue: WorkQueue) -> set[str]:
    """The paths of the index and move jobs waiting on the queue (not started): a worker looks at each
    of them after now. A job that is not imgwatch's (anyone who can write to the queue can add one)
    holds none."""
    job_ids = work_queue.rq_queue.get_job_ids()
    paths: set[str] = set()
    for start in range(0, len(job_ids), _WAITING_JOBS_PER_READ):
        try:
            jobs = work_queue.fetch_jobs(job_ids[start:start + _WAITING_JOBS_PER_READ])
        except redis.RedisError:
            raise  # the queue is out of reach: the caller says so
        except Exception:  # noqa: BLE001 - a record RQ cannot read among them: those jobs are not left out
            continue
        for job in jobs:
            try:
                if job.func_name in (INDEX_JOB, MOVE_JOB):
                    paths.update(path for path in job_paths(job) if isinstance(path, str))
            except Exception:  # noqa: BLE001 - arguments that are not imgwatch's (never run, never trusted)
                continue
    return paths


def missed_moves_together(changed: list[str], gone: list[str]) -> list[str]:
    """``changed + gone``, each gone path right after a changed one with the same file name.

    A move nobody saw (the daemon was down, events were lost) looks like a new file and
    a gone one. Enqueued side by side they share a job (batch sizes are even), and the
    worker embeds before it removes: the new path reuses the old one's stored embedding
    by content hash before the old node goes. Names only pair them up; the content hash
    decides whether anything is reused.
    """
    gone_by_name: dict[str, list[str]] = {}
    for path in reversed(gone):
        gone_by_name.setdefault(os.path.basename(path), []).append(path)
    paired: list[str] = []
    alone: list[str] = []
    for path in changed:
        partners = gone_by_name.get(os.path.basename(path))
        if partners:
            paired += [path, partners.pop()]
        else:
            alone.append(path)
    left = {path for partners in gone_by_name.values() for path in partners}
    return paired + alone + [path for path in gone if path in left]


def moves_not_covered(moves: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``moves`` without those of files that a folder move in the same list moves along anyway
    (the polling observer reports every file of a moved folder, then the folder)."""
    folders: dict[str, str] = {}
    for old, new in moves:
        folders.setdefault(old, new)
    kept = []
    for old, new in moves:
        parent, covered = os.path.dirname(old), False
        while not covered and parent not in ("", os.sep) and parent != os.path.dirname(parent):
            folder_new = folders.get(parent)
            covered = folder_new is not None and moved_along(old, new, parent, folder_new)
            parent = os.path.dirname(parent)
        if not covered:
            kept.append((old, new))
    return kept


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
        self._queue = Outage("queue")
        self._store = Outage("store")
        # Walking a root failed (an I/O error on a flaky share): per root, so one cannot block the others.
        self._unreadable = {root: Outage(root, events=("root_unreadable", "root_readable")) for root in self.roots}
        self._observer: BaseObserver | None = None
        self._watches: dict[str, ObservedWatch] = {}
        # Each root's (st_dev, st_ino) as watched; None while it is missing.
        self._root_ids: dict[str, tuple[int, int] | None] = {}
        self._unwatched: dict[str, str] = {}  # present roots that could not be watched → why
        self._watch_limit_reported = False
        self._unwatchable_below: Counter[str] = Counter()  # root → folders below it that could not be watched
        # Each root's state, for `imgwatch status` (see workqueue.root_states): published on change and renewed.
        self._root_states = RootStates.for_queue(work_queue)
        self._name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._published: list[RootState] | None = None
        self._published_at = -math.inf
        self._restart_delay = 0.0
        self._last_restart = -math.inf
        self._next_restart = 0.0

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
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
        # Watch first, then reconcile: a file that changes during the scan is caught by one or the other.
        present = [root for root in self.roots if root not in missing]  # a file there fails in start_observer
        self._watches = start_observer(observer, self.router, present)
        self._observer = observer
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
                    self.check_roots()
                    self._probe_queue()
                    self._publish_root_states()
                    next_root_check = now + self.root_check_seconds
                if now >= next_periodic:
                    if self._unwatchable_below:  # the limit may have been raised since: try them again
                        self._restart_observer(f"{self._unwatchable_below.total()} folder(s) could not be watched",
                                               died=False)
                    self.request_rescan(self.roots, "periodic")
                    next_periodic = now + rescan_every
            # Last chance for held paths; during an outage this does not wait for the backoff.
            self._collect()
            self._send_moves()
            self._send(flush=True)
        finally:
            if self._observer is not None:
                stop_observer(self._observer)
            with contextlib.suppress(redis.RedisError):  # out of reach: the entry expires by itself
                self._root_states.withdraw(self._name)
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
        return self._observer

    @property
    def watches(self) -> dict[str, ObservedWatch]:
        return dict(self._watches)

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
            ready = [p for p in ready if not _at_or_below(p, moved_from)]
        if self._removed_dirs and self._queue.ready() and self._store.ready():
            ready.extend(self._expand_removed_dirs())
        ready = [p for p in ready if not self._below_missing_root(p)]
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
            below = [state.path for directory in dirs for state in _GuardedStates(self.stored).file_states(directory)]
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
                reconcile_and_enqueue(self.config, _GuardedStates(self.stored), self.failures, self.work_queue,
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

    # -- watching -------------------------------------------------------------------------

    def _take_notices(self) -> None:
        for root in self.router.take_lost_roots():
            self.settler.close_events_lost(root)
            if EVENTS_LOST not in self._rescans.get(root, ()):
                log.warning("events_lost", root=root, note="the watcher's event queue overflowed "
                            "(fs.inotify.max_queued_events); rescanning the root")
            self.request_rescan([root], EVENTS_LOST)
        for folder in self.router.take_unwatchable():
            self._unwatchable_below[root_of(folder, self.roots) or folder] += 1
            if not self._watch_limit_reported:
                self._watch_limit_reported = True
                log.error("watch_limit_reached", folder=folder,
                          note=f"the inotify watch limit is reached: this and further new folders are not watched; "
                               f"{watch_limit_advice()}; until then only rescans (watch.rescan_seconds) find "
                               "files there. Reported once.")
            if folder in self.roots:  # its watches could not be rebuilt (after an overflow): watch it again
                self._unwatched[folder] = f"the inotify watch limit is reached; {watch_limit_advice()}"

    def check_roots(self) -> None:
        """Notice roots that vanished (an unmounted share), came back or were replaced, and dead watchers.

        While a root is missing, removals below it are held back: an unmounted share must
        not empty the index. When it is back, it is watched again and rescanned. When one
        of the observer's threads died, a new observer watches every root and all are rescanned.
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
            if self._observer is not None and self._watch_root(root):
                came_back = identity != known
                self._root_ids[root] = identity
                log.info("root_back" if came_back else "root_watched", root=root)
                self.request_rescan([root], "root_back" if came_back else "watched_again")
        self._check_observer()

    def _watch_root(self, root: str) -> bool:
        """(Re)schedule ``root`` on the observer; False when it cannot be watched (logged once)."""
        assert self._observer is not None
        old = self._watches.pop(root, None)
        if old is not None:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(old)
        self._unwatchable_below.pop(root, None)  # a new watch: its folders that fail are reported anew
        try:
            self._watches[root] = self._observer.schedule(self.router, root, recursive=True)
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
        present = {root: watch for root, watch in self._watches.items()
                   if self._root_ids.get(root) is not None and root not in self._unwatched}
        trouble = "no observer" if self._observer is None else observer_trouble(self._observer, present)
        if trouble is None or time.monotonic() < self._next_restart:
            return
        self._restart_observer(trouble)

    def _restart_observer(self, trouble: str, *, died: bool = True) -> None:
        """A new observer watching every present root, which are then rescanned."""
        self._unwatchable_below.clear()
        now = time.monotonic()
        recent = now - self._last_restart < RESTART_BACKOFF_WINDOW_SECONDS
        self._restart_delay = min(max(self._restart_delay * 2, ROOT_CHECK_SECONDS), BACKOFF_MAX_SECONDS) \
            if recent else 0.0
        self._last_restart = now
        self._next_restart = now + self._restart_delay
        (log.error if died else log.info)("watcher_restarting", trouble=trouble,
                                          note="watching every root again and rescanning them")
        if self._observer is not None:
            with contextlib.suppress(Exception):  # its threads may be half dead; it is discarded anyway
                stop_observer(self._observer)
        self._observer, self._watches = None, {}
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
        self._observer = observer
        present = [root for root in self.roots if self._root_ids.get(root) is not None]
        watched = [root for root in present if self._watch_root(root)]
        self.request_rescan(watched, "watcher_restarted")

    def _below_missing_root(self, path: str) -> bool:
        root = root_of(path, self.roots)
        return root in self._root_ids and self._root_ids[root] is None

    # -- what `imgwatch status` shows ----------------------------------------------------

    def root_states(self) -> list[RootState]:
        """Each root as it is watched now."""
        states = []
        for root in self.roots:
            if root in self._unwatched:  # there (perhaps back from missing), but no watch could be added
                states.append(RootState(root, NOT_WATCHABLE, self._unwatched[root] +
                                        "; until then only rescans (watch.rescan_seconds) find changes there"))
            elif self._root_ids.get(root) is None:
                states.append(RootState(root, MISSING, MISSING_ROOT_DETAIL))
            elif root not in self._watches:  # the observer could not be restarted yet
                states.append(RootState(root, NOT_WATCHABLE, "the watcher is not running; retried every few seconds"))
            else:
                below = self._unwatchable_below[root]
                detail = (f"{below} folder(s) below it could not be watched: the inotify watch limit is reached; "
                          f"{watch_limit_advice()}") if below else ""
                states.append(RootState(root, POLLING if self.config.watch.observer == "polling" else WATCHING,
                                        detail))
        return states

    def _publish_root_states(self) -> None:
        """Publish the roots' states when they changed, and renew them before they expire."""
        states = self.root_states()
        renew = time.monotonic() - self._published_at >= RENEW_SECONDS
        if (states == self._published and not renew) or not self._queue.ready():
            return
        try:
            self._root_states.publish(self._name, states)
        except redis.RedisError as exc:
            self._queue.failed(exc, held=len(self._unsent))
            return
        self._published, self._published_at = states, time.monotonic()
        self._queue_ok()


def _at_or_below(path: str, folders: set[str]) -> bool:
    """Whether ``path`` or one of its parent folders is in ``folders``."""
    while path not in folders:
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return True


def _dir_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
