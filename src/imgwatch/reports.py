"""What `imgwatch status` and `imgwatch doctor` report: gathered into typed results, rendered from them.

Both still report when the queue or the store cannot be reached: that is part of the answer.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

from imgwatch.config import Config
from imgwatch.display import reason_beside
from imgwatch.errors import QueueUnavailable, StoreError, StoreMissing, printable
from imgwatch.files import root_of
from imgwatch.store import GraphStore, PendingSpace, StoreStats, open_store
from imgwatch.unwatched import Unwatched, find_unwatched, watched_roots
from imgwatch.workqueue import FailureLedger, QueueSnapshot, WorkQueue, redis_url_for, take_snapshot
from imgwatch.workqueue.connection import redacted
from imgwatch.workqueue.root_states import POLLING, WATCHING, RootState, RootStates
from imgwatch.workqueue.worker_roots import WorkerRoots


def _shown(lines: list[str]) -> str:
    """Report lines for a person: each escaped on its own, so a name or reason holding a newline
    or an escape sequence stays inside its line (see printable)."""
    return "\n".join(printable(line) for line in lines)


# -- status ------------------------------------------------------------------------------

# A root's state besides those a daemon publishes (workqueue.root_states): one in general.roots
# that no running daemon watches, and any while the queue, where daemons publish, is out of reach.
NOT_WATCHED = "not watched"
UNKNOWN = "unknown"
NOT_WATCHED_DETAIL = "no running daemon watches it: `imgwatch run` (or `imgwatch daemon`) does"
UNKNOWN_DETAIL = "the queue is out of reach, so whether a running daemon watches it is unknown"
UNKNOWN_FOLDERS = "the queue is out of reach, so which folders running daemons watch is unknown"


@dataclass
class RootStatus:
    """A watched folder: its state (watching, polling, missing, not watchable; see
    workqueue.root_states), why, and how many stored images lie below it."""

    path: str
    state: str
    detail: str = ""
    images: int | None = None  # None: the store cannot be read

    @property
    def watched(self) -> bool:
        """Whether a change below it is noticed without waiting for a rescan."""
        return self.state in (WATCHING, POLLING)


@dataclass
class StatusReport:
    queue: QueueSnapshot | None
    queue_error: str | None
    store: StoreStats | None
    store_error: str | None
    store_missing: bool = False  # nothing indexed yet, rather than unreachable
    roots: list[RootStatus] = field(default_factory=list)
    reindex: PendingSpace | None = None  # a change of model under way (`imgwatch reindex`)

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
        if self.reindex is not None:
            lines.append(f"reindex: {self.reindex.model} {self.reindex.embedded}/{self.reindex.total} images "
                         "(search uses the store's model until it is complete)")
        lines.extend(self._roots_text())
        queue = self.queue
        if queue is None:
            lines.append(f"queue:   not reachable ({self.queue_error})")
            return _shown(lines)
        lines.append(f"queue:   {queue.queued_jobs} job(s) / {queue.queued_paths} path(s) waiting, "
                     f"{queue.running_jobs} job(s) / {queue.running_paths} path(s) running, "
                     f"{queue.workers} worker(s)")
        lines.append(f"failed:  {len(queue.failed_files)} file(s), {len(queue.failed_jobs)} job(s)")
        lines.extend(f"  {item.path}: {reason_beside(item.reason, item.path)}" for item in queue.failed_files)
        lines.extend(f"  job {job.job_id} ({job.paths} paths): {job.reason}" for job in queue.failed_jobs)
        return _shown(lines)

    def _roots_text(self) -> list[str]:
        if not self.roots:
            if self.queue is None:
                return [f"roots:   {UNKNOWN} ({UNKNOWN_FOLDERS})"]
            return ["roots:   none watched (no daemon is running; `imgwatch run FOLDER` watches FOLDER)"]
        states = Counter(root.state for root in self.roots)
        lines = [f"roots:   {len(self.roots)} folder(s): " + ", ".join(f"{n} {state}" for state, n in states.items())]
        for root in self.roots:
            images = "" if root.images is None else f", {root.images} images"
            lines.append(f"  {root.path}: {root.state}{images}" + (f" ({root.detail})" if root.detail else ""))
        return lines


def root_statuses(configured: list[str], published: list[RootState] | None) -> list[RootStatus]:
    """The roots running daemons publish, and those of general.roots no daemon watches; ``published``
    is None when the queue, where they publish, is out of reach."""
    roots = [RootStatus(state.root, state.state, state.detail) for state in published or ()]
    watched = [root.path for root in roots]
    for path in configured:
        if root_of(path, watched) is None:  # a configured folder inside a published root is watched
            roots.append(RootStatus(path, UNKNOWN, UNKNOWN_DETAIL) if published is None
                         else RootStatus(path, NOT_WATCHED, NOT_WATCHED_DETAIL))
    return sorted(roots, key=lambda root: root.path)


def _count_images(store: GraphStore, roots: list[RootStatus]) -> list[RootStatus]:
    """``roots`` with the number of stored images below each."""
    return [dataclasses.replace(root, images=store.count_below(root.path)) for root in roots]


def gather_status(config: Config) -> StatusReport:
    queue: QueueSnapshot | None = None
    queue_error: str | None = None
    published: list[RootState] | None = None  # None: the queue is out of reach
    try:
        work_queue = WorkQueue.from_config(config)
        queue = take_snapshot(work_queue, FailureLedger.for_queue(work_queue))
        published = RootStates.for_queue(work_queue).current()
    except QueueUnavailable as exc:
        queue_error = str(exc)
    roots = root_statuses([str(p) for p in config.root_paths], published)
    try:
        with open_store(config, create=False) as store:
            return StatusReport(queue, queue_error, store.stats(), None, roots=_count_images(store, roots),
                                reindex=store.pending_space())
    except StoreMissing as exc:  # nothing indexed yet: nothing below any root
        return StatusReport(queue, queue_error, None, str(exc), store_missing=True,
                            roots=[dataclasses.replace(root, images=0) for root in roots])
    except StoreError as exc:  # unreachable: still show the queue
        return StatusReport(queue, queue_error, None, str(exc), roots=roots)


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
            if (pending := store.pending_space()) is not None:  # a change of model under way
                store_facts = {**store_facts, "reindex": f"{pending.model} {pending.embedded}/{pending.total} images"}
            if announced is None:
                unwatched = UNWATCHED_QUEUE_DOWN
            elif roots := watched_roots([str(p) for p in config.root_paths], announced):
                unwatched = find_unwatched(store, roots)
            else:
                unwatched = UNWATCHED_UNKNOWN
    except StoreMissing as exc:  # reachable, but nothing indexed yet: the queue is still checked
        store_facts = {"backend": config.general.store, "state": "none yet", "detail": str(exc)}
    return DoctorReport(store_facts, queue, unwatched)
