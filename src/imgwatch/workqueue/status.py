"""What is queued, running and failed right now, for `imgwatch status` and `doctor`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from imgwatch.workqueue.failures import FailedFile, FailureLedger
from imgwatch.workqueue.queue import INDEX_JOB, WorkQueue

# Counting the paths of the first this many queued jobs is enough for a status line.
_COUNTED_QUEUED_JOBS = 1000


@dataclass
class FailedJob:
    job_id: str
    paths: int
    reason: str


@dataclass
class QueueSnapshot:
    queued_jobs: int
    queued_paths: int
    running_jobs: int
    running_paths: int
    workers: int
    failed_jobs: list[FailedJob] = field(default_factory=list)
    failed_files: list[FailedFile] = field(default_factory=list)

    @property
    def pending_paths(self) -> int:
        """Paths queued or running; past the jobs whose paths are counted, estimated from them."""
        counted = min(self.queued_jobs, _COUNTED_QUEUED_JOBS)
        queued = self.queued_paths if counted >= self.queued_jobs or not counted \
            else round(self.queued_paths * self.queued_jobs / counted)
        return queued + self.running_paths


UNREADABLE_JOB = "unreadable job (not an imgwatch job)"


def queue_is_idle(work_queue: WorkQueue) -> bool:
    """Nothing queued and nothing running: a new job would start at once.

    Two O(1) Redis reads; no registry cleanup (that belongs to the workers).
    """
    rq_queue = work_queue.rq_queue
    return rq_queue.count == 0 and StartedJobRegistry(queue=rq_queue).get_job_count(cleanup=False) == 0


def take_snapshot(work_queue: WorkQueue, failures: FailureLedger, max_failed_jobs: int = 20) -> QueueSnapshot:
    """What the queue holds now. Jobs that are not imgwatch's (anyone who can write to Redis
    can put some there) are counted and shown, never trusted: they carry no paths."""
    rq_queue = work_queue.rq_queue
    queued_ids = rq_queue.get_job_ids(0, _COUNTED_QUEUED_JOBS - 1)
    # Started-registry entries are "<job id>:<execution id>".
    running_ids = [entry.split(":")[0] for entry in StartedJobRegistry(queue=rq_queue).get_job_ids()]
    failed_ids = FailedJobRegistry(queue=rq_queue).get_job_ids(0, max_failed_jobs - 1, desc=True)
    return QueueSnapshot(
        queued_jobs=rq_queue.count,
        queued_paths=_count_paths(work_queue, queued_ids),
        running_jobs=len(running_ids),
        running_paths=_count_paths(work_queue, running_ids),
        workers=BaseWorker.count(connection=work_queue.connection, queue=rq_queue),
        failed_jobs=[_failed_job(job_id, job) for job_id, job in _fetch(work_queue, [i for i in failed_ids if i])],
        failed_files=failures.failed_files(),
    )


def _fetch(work_queue: WorkQueue, job_ids: Sequence[str]) -> list[tuple[str, Job | None]]:
    """(id, job) for the jobs still stored; job is None for one whose record cannot be read."""
    try:
        return [(job.id, job) for job in work_queue.fetch_jobs(job_ids)]
    except Exception:  # noqa: BLE001 - a malformed job record among them: read them one by one
        pass
    fetched: list[tuple[str, Job | None]] = []
    for job_id in job_ids:
        try:
            fetched.append((job_id, Job.fetch(job_id, connection=work_queue.connection, serializer=JSONSerializer)))
        except NoSuchJobError:
            continue  # expired meanwhile
        except Exception:  # noqa: BLE001 - written by something that is not RQ
            fetched.append((job_id, None))
    return fetched


def _index_paths(job: Job | None) -> list[str] | None:
    """The paths of an imgwatch index job; None for anything else (never imports or unpickles)."""
    if job is None:
        return None
    try:
        func_name, args, kwargs = job.func_name, job.args, job.kwargs
    except DeserializationError:
        return None
    if func_name != INDEX_JOB or kwargs or not isinstance(args, list | tuple) or len(args) != 1:
        return None
    paths = args[0]
    return paths if isinstance(paths, list) else None


def _count_paths(work_queue: WorkQueue, job_ids: Sequence[str]) -> int:
    return sum(len(_index_paths(job) or ()) for _, job in _fetch(work_queue, job_ids))


def _failed_job(job_id: str, job: Job | None) -> FailedJob:
    paths = _index_paths(job)
    if job is None or (paths is None and _unreadable(job)):
        return FailedJob(job_id, 0, UNREADABLE_JOB)
    return FailedJob(job_id, len(paths or ()), _last_error_line(job))


def _unreadable(job: Job) -> bool:
    try:
        job.func_name  # noqa: B018 - JSON only: reading it runs nothing
    except DeserializationError:
        return True
    return False


def _last_error_line(job: Job) -> str:
    try:
        result = job.latest_result()
        exc_string = (result.exc_string if result else None) or ""
    except Exception:  # noqa: BLE001 - a result record that cannot be read
        return "unknown"
    lines = exc_string.strip().splitlines()
    if not lines:
        return "unknown"
    # "imgwatch.workers.worker.JobRefused: refused: ..." reads better as "JobRefused: refused: ...".
    kind, colon, message = lines[-1].partition(": ")
    if colon and " " not in kind:
        return f"{kind.rpartition('.')[2]}: {message}"
    return lines[-1]
