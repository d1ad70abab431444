"""What `imgwatch status` and `imgwatch doctor` report: gathered into typed results, rendered from them.

Both still report when the queue or the store cannot be reached: that is part of the answer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from imgwatch.config import Config
from imgwatch.errors import QueueUnavailable, StoreError, StoreMissing, printable
from imgwatch.store import StoreStats, open_store
from imgwatch.unwatched import Unwatched, find_unwatched, watched_roots
from imgwatch.workqueue import FailureLedger, QueueSnapshot, WorkQueue, redis_url_for, take_snapshot
from imgwatch.workqueue.connection import redacted
from imgwatch.workqueue.worker_roots import WorkerRoots


def _shown(lines: list[str]) -> str:
    """Report lines for a person: each escaped on its own, so a name or reason holding a newline
    or an escape sequence stays inside its line (see printable)."""
    return "\n".join(printable(line) for line in lines)


# -- status ------------------------------------------------------------------------------


@dataclass
class StatusReport:
    queue: QueueSnapshot | None
    queue_error: str | None
    store: StoreStats | None
    store_error: str | None
    store_missing: bool = False  # nothing indexed yet, rather than unreachable

    def as_json(self) -> dict[str, object]:
        facts = dataclasses.asdict(self)
        del facts["store_missing"]  # the text says it; in JSON, store_error does
        return facts

    def as_text(self) -> str:
        lines = []
        if self.store is None:
            state = "none yet" if self.store_missing else "not available"
            lines.append(f"store:   {state} ({self.store_error})")
        else:
            stats = self.store
            lines.append(f"store:   {stats.images} images, {stats.links} links "
                         f"({stats.backend}: {stats.location}; model {stats.model or '-'})")
        queue = self.queue
        if queue is None:
            lines.append(f"queue:   not reachable ({self.queue_error})")
            return _shown(lines)
        lines.append(f"queue:   {queue.queued_jobs} job(s) / {queue.queued_paths} path(s) waiting, "
                     f"{queue.running_jobs} job(s) / {queue.running_paths} path(s) running, "
                     f"{queue.workers} worker(s)")
        lines.append(f"failed:  {len(queue.failed_files)} file(s), {len(queue.failed_jobs)} job(s)")
        lines.extend(f"  {item.path}: {item.reason}" for item in queue.failed_files)
        lines.extend(f"  job {job.job_id} ({job.paths} paths): {job.reason}" for job in queue.failed_jobs)
        return _shown(lines)


def gather_status(config: Config) -> StatusReport:
    queue: QueueSnapshot | None = None
    queue_error: str | None = None
    try:
        work_queue = WorkQueue.from_config(config)
        queue = take_snapshot(work_queue, FailureLedger.for_queue(work_queue))
    except QueueUnavailable as exc:
        queue_error = str(exc)
    try:
        with open_store(config, create=False) as store:
            return StatusReport(queue, queue_error, store.stats(), None)
    except StoreError as exc:  # missing or unreachable: still show the queue
        return StatusReport(queue, queue_error, None, str(exc), store_missing=isinstance(exc, StoreMissing))


# -- doctor ------------------------------------------------------------------------------


@dataclass
class QueueReachable:
    url: str
    reachable: bool = field(default=True, init=False)
    workers: int
    queued_jobs: int


@dataclass
class QueueUnreachable:
    url: str
    reachable: bool = field(default=False, init=False)
    error: str


# Shown instead when the watched folders are not known.
UNWATCHED_UNKNOWN = ("not checked: general.roots is not set and no running worker announced its folders "
                     "(set general.roots, or run doctor while imgwatch runs)")
UNWATCHED_QUEUE_DOWN = "not checked: the queue is out of reach, so the running workers' folders are unknown"


@dataclass
class DoctorReport:
    store: dict[str, object]  # the store's describe() facts, or state "none yet"
    queue: QueueReachable | QueueUnreachable
    unwatched: Unwatched | str | None = None  # str: why it was not checked; None: no store yet

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def as_text(self) -> str:
        lines = []
        sections: list[tuple[str, dict[str, object]]] = [
            ("store", self.store), ("queue", dataclasses.asdict(self.queue))]
        if isinstance(self.unwatched, str):
            sections.append(("unwatched", {"images": self.unwatched}))
        elif self.unwatched is not None and self.unwatched.images:
            folders = ", ".join(f"{folder} ({count})" for folder, count in self.unwatched.folders.items())
            sections.append(("unwatched", {"images": self.unwatched.images, "in": folders,
                                           "remedy": self.unwatched.remedy}))
        for section, facts in sections:
            lines.append(f"{section}:")
            lines.extend(f"  {key + ':':<18} {'-' if value is None else value}" for key, value in facts.items())
        return _shown(lines)


def gather_doctor(config: Config) -> DoctorReport:
    url = redacted(redis_url_for(config))  # a password in queue.redis_url is never shown
    queue: QueueReachable | QueueUnreachable
    announced: list[str] | None = None  # None: the queue is out of reach
    try:
        work_queue = WorkQueue.from_config(config)
        snapshot = take_snapshot(work_queue, FailureLedger.for_queue(work_queue))
        queue = QueueReachable(url, workers=snapshot.workers, queued_jobs=snapshot.queued_jobs)
        announced = WorkerRoots.for_queue(work_queue).current()
    except QueueUnavailable as exc:
        queue = QueueUnreachable(url, error=str(exc))
    unwatched: Unwatched | str | None = None
    try:
        with open_store(config, create=False) as store:
            store_facts = store.describe()
            if announced is None:
                unwatched = UNWATCHED_QUEUE_DOWN
            elif roots := watched_roots([str(p) for p in config.root_paths], announced):
                unwatched = find_unwatched(store, roots)
            else:
                unwatched = UNWATCHED_UNKNOWN
    except StoreMissing as exc:  # reachable, but nothing indexed yet: the queue is still checked
        store_facts = {"backend": config.general.store, "state": "none yet", "detail": str(exc)}
    return DoctorReport(store_facts, queue, unwatched)
