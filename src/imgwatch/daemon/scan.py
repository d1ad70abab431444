"""One reconciliation pass: walk the roots, compare with the store, enqueue what changed.

`imgwatch scan` runs it once, the daemon on every rescan, `imgwatch run` after its queue server
was restarted. It is cheap, no file is read: daemon.reconcile compares signatures (what counts
as changed), this module enqueues the result and says how much went onto the queue.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import redis

from imgwatch.config import Config
from imgwatch.daemon.moves import missed_moves_together
from imgwatch.daemon.reconcile import KnownFailure, ReconcilePlan, StoredFileStates, reconcile_roots
from imgwatch.files import PathFilter
from imgwatch.log import get_logger
from imgwatch.store import FileState
from imgwatch.workqueue import FailureLedger, WorkQueue
from imgwatch.workqueue.queue import INDEX_JOB, MOVE_JOB, job_paths, paths_per_job

log = get_logger("imgwatch.scan")


class StoreReadError(Exception):
    """Reading the store failed; ``__cause__`` is the store's own error."""


class GuardedStates:
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
