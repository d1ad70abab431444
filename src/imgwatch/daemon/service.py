"""The daemon: reconcile on start, then watch, settle and enqueue until stopped."""

from __future__ import annotations

import threading
import time

import redis

from imgwatch.config import Config, ConfigError
from imgwatch.daemon.reconcile import ReconcilePlan, reconcile_roots
from imgwatch.daemon.settler import Settler
from imgwatch.daemon.watcher import EventRouter, make_observer, start_observer
from imgwatch.files import PathFilter, root_of
from imgwatch.log import get_logger
from imgwatch.store import GraphStore
from imgwatch.workqueue import WorkQueue

log = get_logger("imgwatch.daemon")

POLL_SECONDS = 0.25
# Settled paths wait this long for company before going out in a partial batch:
# a folder being copied in then becomes a few full jobs, not many tiny ones.
LINGER_SECONDS = 1.0


def reconcile_and_enqueue(config: Config, store: GraphStore, work_queue: WorkQueue) -> ReconcilePlan:
    """One reconciliation pass over every root (what `imgwatch scan` runs)."""
    started = time.perf_counter()
    roots = [str(p) for p in config.root_paths]
    plan = reconcile_roots(
        roots,
        PathFilter.create(config.watch.extensions, config.watch.exclude),
        store,
        work_queue.failed_signatures(),
    )
    jobs = work_queue.enqueue_paths(plan.paths, config.watch.batch_size)
    log.info("reconciled", roots=len(roots), changed=len(plan.changed), gone=len(plan.gone),
             unchanged=plan.unchanged, known_failures=plan.known_failures, jobs=len(jobs),
             seconds=round(time.perf_counter() - started, 3))
    return plan


class Daemon:
    def __init__(self, config: Config, store: GraphStore, work_queue: WorkQueue) -> None:
        if not config.general.roots:
            raise ConfigError("no folders to watch: pass ROOT arguments or set general.roots")
        self.config = config
        self.store = store
        self.work_queue = work_queue
        self.roots = [str(p) for p in config.root_paths]
        close_events = config.watch.observer == "inotify"
        self.settler = Settler(config.watch.settle_seconds, close_events=close_events)
        self.router = EventRouter(
            self.settler, PathFilter.create(config.watch.extensions, config.watch.exclude), self.roots
        )
        self._unsent: list[str] = []  # kept across queue outages so nothing is lost
        self._unsent_since = 0.0
        self.enqueued_paths = 0

    def run(self, stop: threading.Event) -> None:
        observer = make_observer(self.config.watch.observer, self.config.watch.polling_interval)
        # Watch first, then reconcile: a file that changes during the scan is caught by one or the other.
        start_observer(observer, self.router, self.roots)
        log.info("watching", roots=self.roots, observer=self.config.watch.observer,
                 settle_seconds=self.config.watch.settle_seconds)
        try:
            reconcile_and_enqueue(self.config, self.store, self.work_queue)
            while not stop.wait(POLL_SECONDS):
                self.tick()
            self.tick(flush=True)
        finally:
            observer.stop()
            observer.join(timeout=5)
            if self._unsent or len(self.settler):
                log.warning("stopping_with_pending", unsent=len(self._unsent), unsettled=len(self.settler),
                            note="the next start reconciles them")

    def tick(self, flush: bool = False) -> None:
        """Move settled paths (and paths below removed folders) onto the queue."""
        ready = self.settler.due()
        for directory in self.router.take_removed_dirs():
            ready.extend(state.path for state in self.store.file_states(under=directory))
            ready.extend(p for p in self.work_queue.failed_signatures() if root_of(p, [directory]))
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
        self.enqueued_paths += len(self._unsent)
        log.info("enqueued", paths=len(self._unsent))
        self._unsent = []
