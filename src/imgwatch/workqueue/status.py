"""What is queued, running and failed right now, for `imgwatch status` and `doctor`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.worker import BaseWorker

from imgwatch.workqueue.failures import FailedFile, FailureLedger
from imgwatch.workqueue.jobs import WorkQueue, job_paths

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


def take_snapshot(work_queue: WorkQueue, failures: FailureLedger, max_failed_jobs: int = 20) -> QueueSnapshot:
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
        failed_jobs=[_failed_job(job) for job in work_queue.fetch_jobs([i for i in failed_ids if i])],
        failed_files=failures.failed_files(),
    )


def _count_paths(work_queue: WorkQueue, job_ids: Sequence[str]) -> int:
    return sum(len(job_paths(job)) for job in work_queue.fetch_jobs(job_ids))


def _failed_job(job: Job) -> FailedJob:
    result = job.latest_result()
    last_line = (result.exc_string or "").strip().splitlines()[-1:] if result else []
    return FailedJob(job.id, len(job_paths(job)), last_line[0] if last_line else "unknown")
