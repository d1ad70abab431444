"""The daemon: reconcile on start, then watch, settle and enqueue until stopped."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time

import redis
from watchdog.observers.api import BaseObserver, ObservedWatch

from imgwatch.config import Config, ConfigError
from imgwatch.daemon.reconcile import ReconcilePlan, StoredFileStates, reconcile_roots
from imgwatch.daemon.settler import Settler
from imgwatch.daemon.watcher import EventRouter, make_observer, start_observer
from imgwatch.files import PathFilter, root_of
from imgwatch.log import get_logger
from imgwatch.workqueue import FailureLedger, WorkQueue

log = get_logger("imgwatch.daemon")

POLL_SECONDS = 0.25
ROOT_CHECK_SECONDS = 2.0
# Settled paths wait this long for company before going out in a partial batch:
# a folder being copied in then becomes a few full jobs, not many tiny ones.
LINGER_SECONDS = 1.0


def reconcile_and_enqueue(
    config: Config,
    stored: StoredFileStates,
    failures: FailureLedger,
    work_queue: WorkQueue,
    roots: list[str] | None = None,
) -> ReconcilePlan:
    """One reconciliation pass over ``roots`` (default: every root; what `imgwatch scan` runs).

    A root that is not there (an unmounted share) is skipped, not emptied.
    """
    started = time.perf_counter()
    roots = [str(p) for p in config.root_paths] if roots is None else roots
    missing = [root for root in roots if not os.path.isdir(root)]
    for root in missing:
        log.warning("root_missing", root=root, note="skipped: its images stay indexed until it is back")
    roots = [root for root in roots if root not in missing]
    plan = reconcile_roots(
        roots,
        PathFilter.create(config.watch.extensions, config.watch.exclude),
        stored,
        failures.failed_signatures(),
    )
    jobs = work_queue.enqueue_paths(plan.paths, config.watch.batch_size)
    log.info("reconciled", roots=len(roots), changed=len(plan.changed), gone=len(plan.gone),
             unchanged=plan.unchanged, known_failures=plan.known_failures, jobs=len(jobs),
             seconds=round(time.perf_counter() - started, 3))
    return plan


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
        self._unsent: list[str] = []  # kept across queue outages so nothing is lost
        self._unsent_since = 0.0
        # Each root's (st_dev, st_ino) as watched; None while it is missing.
        self._root_ids: dict[str, tuple[int, int] | None] = {}
        self._watches: dict[str, ObservedWatch] = {}

    def run(self, stop: threading.Event) -> None:
        observer = make_observer(self.config.watch.observer, self.config.watch.polling_interval)
        # Watch first, then reconcile: a file that changes during the scan is caught by one or the other.
        self._watches = start_observer(observer, self.router, self.roots)
        self._root_ids = {root: _dir_identity(root) for root in self.roots}
        log.info("watching", roots=self.roots, observer=self.config.watch.observer,
                 settle_seconds=self.config.watch.settle_seconds)
        try:
            self.reconcile()
            next_root_check = time.monotonic() + ROOT_CHECK_SECONDS
            while not stop.wait(POLL_SECONDS):
                if time.monotonic() >= next_root_check:
                    self.check_roots(observer)
                    next_root_check = time.monotonic() + ROOT_CHECK_SECONDS
                self.tick()
            self.tick(flush=True)
        finally:
            observer.stop()
            observer.join(timeout=5)
            if self._unsent or len(self.settler):
                log.warning("stopping_with_pending", unsent=len(self._unsent), unsettled=len(self.settler),
                            note="the next start reconciles them")

    def check_roots(self, observer: BaseObserver) -> None:
        """Notice roots that vanished (an unmounted share) or came back or were replaced.

        While a root is missing, removals below it are held back: an unmounted share must
        not empty the index. When it is back, it is watched again and reconciled.
        """
        for root in self.roots:
            identity = _dir_identity(root)
            if identity == self._root_ids.get(root):
                continue
            self._root_ids[root] = identity
            if identity is None:
                log.warning("root_missing", root=root, note="holding removals below it until it is back")
                continue
            watch = self._watches.pop(root, None)
            if watch is not None:
                with contextlib.suppress(KeyError, OSError):
                    observer.unschedule(watch)
            try:
                self._watches[root] = observer.schedule(self.router, root, recursive=True)
            except OSError as exc:
                log.error("root_unwatchable", root=root, error=str(exc))
                self._root_ids[root] = None
                continue
            log.info("root_back", root=root)
            self.reconcile([root])

    def reconcile(self, roots: list[str] | None = None) -> ReconcilePlan:
        return reconcile_and_enqueue(self.config, self.stored, self.failures, self.work_queue, roots)

    @property
    def unsent(self) -> list[str]:
        """Settled paths not on the queue yet (held while the queue is unreachable)."""
        return list(self._unsent)

    def _below_missing_root(self, path: str) -> bool:
        root = root_of(path, self.roots)
        return root in self._root_ids and self._root_ids[root] is None

    def tick(self, flush: bool = False) -> None:
        """Move settled paths (and paths below removed folders) onto the queue."""
        ready = self.settler.due()
        removed_dirs = self.router.take_removed_dirs()
        failed: list[str] = []
        if removed_dirs:
            try:
                failed = list(self.failures.failed_signatures())
            except redis.RedisError:
                pass  # queue down: their failure records are cleared by the next reconcile
        for directory in removed_dirs:
            ready.extend(state.path for state in self.stored.file_states(under=directory))
            ready.extend(p for p in failed if root_of(p, [directory]))
        ready = [p for p in ready if not self._below_missing_root(p)]
        if ready and not self._unsent:
            self._unsent_since = time.monotonic()
        self._unsent.extend(ready)
        if not self._unsent:
            return
        lingered = time.monotonic() - self._unsent_since >= LINGER_SECONDS
        if not (flush or lingered or len(self._unsent) >= self.config.watch.batch_size):
            return
        try:
            self.work_queue.enqueue_paths(self._unsent, self.config.watch.batch_size)
        except redis.RedisError as exc:
            log.warning("enqueue_failed", paths=len(self._unsent), error=str(exc), note="retrying")
            return
        log.info("enqueued", paths=len(self._unsent))
        self._unsent = []


def _dir_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
